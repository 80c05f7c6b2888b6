"""``python -m vaekit`` is the ``vaekit`` command (also under ``torchrun``)."""

import sys

from .cli import main

sys.exit(main())
