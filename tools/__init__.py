"""Tools on top of the program: the offline plan, preflight, the image snapshot builder, the price refresh."""
