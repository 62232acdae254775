"""``python -m xlt`` runs the command line."""

import sys

from xlt.cli import main

sys.exit(main())
