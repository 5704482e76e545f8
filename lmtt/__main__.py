import sys

from lmtt.tools.cli import main

sys.exit(main())
