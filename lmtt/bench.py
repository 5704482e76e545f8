"""`python -m lmtt.bench`: the documented entry point of lmtt.tools.bench."""

import sys

from lmtt.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
