"""`python -m tools.image_snapshot` (console script `gpuinf-image-snapshot`): see cli.py."""

import sys

from tools.image_snapshot.cli import main

if __name__ == "__main__":
    sys.exit(main())
