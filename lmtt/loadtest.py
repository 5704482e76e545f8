"""`python -m lmtt.loadtest`: the documented entry point of lmtt.tools.loadtest."""

import sys

from lmtt.tools.loadtest import main

if __name__ == "__main__":
    sys.exit(main())
