import sys

from lmtt.cli import main

sys.exit(main())
