"""The value parsers of ``vaekit train``'s option table (:mod:`vaekit.cli.train_options`): each turns one
command-line string into a value or raises ``argparse.ArgumentTypeError`` with what was expected. They import
torch-dependent modules only inside, so that building the parser stays light."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

from vaekit.errors import ConfigError

__all__ = ["integer", "number", "choice", "widths", "image_size", "decoder_variance", "arch_name", "json_object",
           "device_name", "text"]


def integer(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def number(minimum: float, *, strict: bool = False, below: float | None = None,
           maximum: float | None = None) -> Callable[[str], float]:
    """A float >= ``minimum`` (> with ``strict``), < ``below`` and <= ``maximum`` where given: an option
    that must be moderate takes a ``maximum`` (1e308 is refused here, not left to diverge)."""
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    want = f"a number {bound}" + (f" and < {below:g}" if below is not None else "") + \
        (f" and <= {maximum:g}" if maximum is not None else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value <= minimum) or \
                (below is not None and value >= below) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value
    return parse


def choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"unknown {text!r}; choose one of {', '.join(choices)}")
        return text
    return parse


def widths(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths such as 200,200, got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"every width must be a positive integer, got {text!r}")
    return widths


def image_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 28x28, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes HxW, got {text!r}")
    return h, w


def decoder_variance(text: str) -> float | str:
    from vaekit.models.variance import VARIANCE_MODES, parse_variance

    try:
        return parse_variance(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"expected a number c > 0 or one of {', '.join(VARIANCE_MODES)}, "
                                         f"got {text!r}") from None


def arch_name(text: str) -> str:
    from vaekit.models.architectures import ARCHITECTURES
    from vaekit.models.custom import is_custom_arch, normalise_builder

    if text in ARCHITECTURES:
        return text
    if is_custom_arch(text):
        try:
            normalise_builder(text)                   # checks the form only; imports nothing
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).partition(": ")[2] or str(exc)) from None
        return text
    raise argparse.ArgumentTypeError(f"unknown {text!r}; choose {', '.join(ARCHITECTURES)} or MODULE:FUNCTION "
                                     "(a module name or .py file, a colon, a function name)")


def json_object(text: str) -> dict[str, Any]:
    from vaekit.store.documents import DuplicateKeyError, loads

    try:
        value = loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg}): {text[:80]!r}") from None
    except DuplicateKeyError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, which value is meant is ambiguous: {text[:80]!r}") from None
    except RecursionError:
        raise argparse.ArgumentTypeError(f"not valid JSON (nested too deeply): {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"width\": 8}}', got {text!r}")
    return value


def device_name(text: str) -> str:
    if text == "auto":
        return text
    from vaekit.devices import resolve_device

    try:
        resolve_device(text, option="--device")      # a name that is no device, or one this machine lacks
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None
    return text


def text(text: str) -> str:
    return text
