"""``python -m vaekit`` is the ``vaekit`` command (also under ``torchrun``): :func:`vaekit.cli.exits.run`."""

from vaekit.cli.exits import run

run()
