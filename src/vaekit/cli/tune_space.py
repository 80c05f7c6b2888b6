"""The search space of ``vaekit tune``: a JSON object or (.yaml, .yml) YAML mapping from ``vaekit train``
option names (the long names with underscores, as in a ``--config`` file) to their ranges::

    {"lr":         {"type": "float", "low": 1e-4, "high": 1e-2, "log": true},
     "latent_dim": {"type": "int", "low": 2, "high": 16, "step": 2},
     "hidden":     {"type": "categorical", "choices": ["64,64", "200,200"]},
     "beta":       [0.5, 1.0, 2.0]}

A list is short for ``{"type": "categorical", "choices": LIST}``. Every key is checked against the
train option table (:data:`vaekit.cli.train_options.BY_NAME`) and every bound and choice is parsed by
that option's own parser, so that a space that names an unknown option or a value ``vaekit train``
would refuse stops before the first trial, with one line naming the key. Options that place or
steer the run (``out``, ``device``, ...) cannot be searched over.

Nothing here imports Optuna: :func:`suggest` takes the trial object it is given.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaekit.cli import train_options as options
from vaekit.errors import ConfigError

__all__ = ["Param", "load_space", "suggest", "NOT_SEARCHABLE"]

#: Train options a search cannot vary: where the run goes, what runs it, and how the run is tracked.
NOT_SEARCHABLE = ("out", "device", "data", "data_dir", "download", "test_data", "no_progress", "mlflow",
                  "mlflow_experiment", "dist_timeout", "label_column", "importance_samples")
KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class Param:
    """One searched option: ``kind`` float or int over [low, high] (``log``: uniform in log space; ``step``:
    a grid), or categorical over ``choices`` (each a str, number or bool, as written in the file)."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def value(self, drawn: Any) -> Any:
        """The train option's value for what the sampler drew (parsed as ``vaekit train`` parses it)."""
        opt = options.BY_NAME[self.name]
        if opt.parse is None:
            return bool(drawn)
        return opt.parse(_text(drawn))


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _fail(path: Path, key: str, problem: str) -> ConfigError:
    return ConfigError(f"--space {path}: {key}: {problem}")


def _checked(path: Path, key: str, value: Any) -> None:
    """Parse ``value`` with option ``key``'s parser (a ConfigError naming the key when it refuses it)."""
    opt = options.BY_NAME[key]
    if opt.parse is None:
        if not isinstance(value, bool):
            raise _fail(path, key, f"an on/off option takes true or false, got {value!r}")
        return
    if isinstance(value, bool) or value is None or (isinstance(value, float) and not math.isfinite(value)):
        raise _fail(path, key, f"{value!r} is not a value of {options.flag(key)}")
    try:
        opt.parse(_text(value))
    except (argparse.ArgumentTypeError, ConfigError, ValueError) as exc:
        raise _fail(path, key, str(exc)) from None


def _param(path: Path, key: str, spec: Any) -> Param:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise _fail(path, key, "expected a list of choices or an object with \"type\"")
    kind = spec.get("type")
    if kind not in KINDS:
        raise _fail(path, key, f"\"type\" must be one of {', '.join(KINDS)}, got {kind!r}")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise _fail(path, key, f"unknown field {extra[0]!r} for type {kind} (fields: {', '.join(sorted(allowed))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _fail(path, key, "\"choices\" must be a non-empty list")
        for choice in choices:
            if not isinstance(choice, (str, int, float, bool)):
                raise _fail(path, key, f"choice {choice!r}: a choice is a string, number or true/false")
            _checked(path, key, choice)
        return Param(key, kind, choices=tuple(choices))
    return _range(path, key, kind, spec)


def _range(path: Path, key: str, kind: str, spec: dict[str, Any]) -> Param:
    number = int if kind == "int" else (int, float)
    low: Any = spec.get("low")
    high: Any = spec.get("high")
    log: Any = spec.get("log", False)
    step: Any = spec.get("step")
    for name, bound in (("low", low), ("high", high)):
        if isinstance(bound, bool) or not isinstance(bound, number):
            raise _fail(path, key, f"\"{name}\" must be {'an integer' if kind == 'int' else 'a number'}, got {bound!r}")
        _checked(path, key, bound if kind == "int" else float(bound))
    if not low < high:
        raise _fail(path, key, f"\"low\" {low} must be below \"high\" {high}")
    if not isinstance(log, bool):
        raise _fail(path, key, f"\"log\" must be true or false, got {log!r}")
    if log and low <= 0:
        raise _fail(path, key, f"a log range needs \"low\" > 0, got {low}")
    if step is not None and (isinstance(step, bool) or not isinstance(step, number) or step <= 0 or log):
        raise _fail(path, key, f"\"step\" must be a positive {kind} and not with \"log\", got {step!r}")
    return Param(key, kind, float(low), float(high), log, None if step is None else float(step))


def load_space(path: Path) -> tuple[Param, ...]:
    """The parameters of the space file ``path`` (JSON, or YAML for .yaml/.yml), each checked against
    the train options; a ConfigError naming the file and the key otherwise."""
    if not path.is_file():
        raise ConfigError(f"--space {path}: file not found")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--space {path}: not valid YAML ({' '.join(str(exc).split())})") from None
    else:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--space {path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"--space {path}: expected a non-empty object of train option names and their ranges")
    params = []
    for key, spec in doc.items():
        if key not in options.BY_NAME:
            raise _fail(path, key, "not an option of vaekit train (keys are the long option names with underscores)")
        if key in NOT_SEARCHABLE:
            raise _fail(path, key, "cannot be searched over; give it on the command line instead")
        params.append(_param(path, key, spec))
    return tuple(params)


def suggest(trial: Any, params: tuple[Param, ...]) -> dict[str, Any]:
    """Draw each parameter from an Optuna ``trial``; the train option values by name."""
    values: dict[str, Any] = {}
    for p in params:
        if p.kind == "categorical":
            drawn: Any = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            drawn = trial.suggest_int(p.name, int(p.low or 0), int(p.high or 0), log=p.log,
                                      step=int(p.step) if p.step is not None else 1)
        else:
            drawn = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
        values[p.name] = p.value(drawn)
    return values
