"""``python -m loom.cli``."""

import sys

from loom.cli import main

sys.exit(main())
