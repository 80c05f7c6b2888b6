"""Exceptions raised by vaekit.

Every error a user can cause (bad data, a bad option, a mismatched shape, a bad file) is a
subclass of :class:`VaekitError`; the command line turns these into a one-line message and exit
code 2. Each is also a ``ValueError`` (or ``OSError`` for files) so generic handlers still work.
"""

from __future__ import annotations


class VaekitError(Exception):
    """Base class of the errors a user can cause; the message names the input and the problem."""


class ConfigError(VaekitError, ValueError):
    """An option or configuration value is impossible (e.g. ``c <= 0``, an unknown key)."""


class ShapeError(VaekitError, ValueError):
    """A tensor's shape does not match what a model or function expects."""


class DataError(VaekitError, ValueError):
    """A data file or array is malformed (corrupt, ragged, non-finite, wrong range, ...)."""


class MissingDataError(DataError):
    """Data files that are not where they were looked for. ``str()`` words the remedy for Python callers
    (``download=True``); :attr:`command_line` words it with the command's options (``--download``)."""

    def __init__(self, message: str, command_line: str):
        super().__init__(message)
        self.command_line = command_line


class CheckpointError(VaekitError, ValueError):
    """A saved model or checkpoint is missing, corrupt, from another model, or of a newer format."""


class UntrustedCodeError(ConfigError):
    """A configuration names Python code to import (a user's network builder), and the caller did not
    opt in with ``trust_code=True`` (``--trust-code``): importing it would execute it."""
