"""`python -m infra.preflight ...` runs `tools.preflight` (kept for the README's and CI's command line)."""

import sys

from tools.preflight.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
