"""``python -m salma <command>``: the command line (``salma.cli``)."""

import sys

from salma.cli import main

if __name__ == "__main__":
    sys.exit(main())
