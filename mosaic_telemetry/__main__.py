"""``python -m mosaic_telemetry``: the command line."""

import sys

from .cli import main

sys.exit(main())
