"""`python -m infra.plan ...` runs `tools.plan` (kept for the README's and CI's command line)."""

from tools.plan.__main__ import run

if __name__ == "__main__":
    run()
