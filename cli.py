"""`python cli.py ...` from a checkout runs the `mcqa` command; the commands live in mcqa/_cli/."""

import sys

from mcqa._cli import main

if __name__ == "__main__":
    sys.exit(main())
