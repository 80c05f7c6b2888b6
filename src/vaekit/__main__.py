"""``python -m vaekit`` is the ``vaekit`` command (also under ``torchrun``)."""

import sys

from vaekit.cli import main

sys.exit(main())
