"""A run described in words and numbers, for the reports: number formats, dates, durations, and
one-line descriptions of its command, data, splits, preprocessing, model and training."""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from vaekit.viz.run_record import RunRecord

__all__ = ["number", "duration", "when", "command_line", "versions", "data_text", "splits_text",
           "preprocessing_text", "model_text", "training_text", "NOT_RECORDED"]

NOT_RECORDED = "not recorded (the run was trained before vaekit wrote run.json)"


def number(value: object, digits: int = 4) -> str:
    """A reported number as the command line prints it: ints in full; floats with ``digits`` decimals
    (in scientific notation below 10^-3 or from 10^7 on); None as "n/a"; NaN and ±∞ spelt out."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        return f"{value:.{digits}f}"
    return f"{value:.{digits - 1}e}"


def duration(seconds: float) -> str:
    """``seconds`` as 4.2 s, 3 min 05 s or 2 h 07 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def when(stamp: object) -> str:
    """An ISO-8601 UTC time stamp (``2026-01-31T14:03:12Z``) as ``2026-01-31 14:03:12 UTC``."""
    text = str(stamp)
    return text.replace("T", " ").replace("Z", " UTC") if text.endswith("Z") else text


def command_line(session: Mapping[str, Any]) -> str:
    """The session's command as a shell would take it back."""
    words = session.get("command")
    return shlex.join(str(w) for w in words) if isinstance(words, list) else str(words)


def versions(session: Mapping[str, Any]) -> str:
    """``vaekit 0.2.0, torch 2.13.0, Python 3.11.2``."""
    found = session.get("versions")
    if not isinstance(found, dict):
        return "not recorded"
    names = {"vaekit": "vaekit", "torch": "torch", "python": "Python"}
    order = [k for k in names if k in found] + sorted(k for k in found if k not in names)
    return ", ".join(f"{names.get(k, k)} {found[k]}" for k in order)


def _fraction(value: object) -> str:
    return f"{float(value):g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def data_text(data: Mapping[str, Any]) -> str:
    """The data spec: source, split seed and fractions, and the options that were set."""
    if not data:
        return "not recorded"
    parts = [f"split seed {data.get('seed')}", f"validation fraction {_fraction(data.get('val_fraction'))}",
             f"test fraction {_fraction(data.get('test_fraction'))}"]
    if data.get("test_data"):
        parts.append(f"test split: every example of {data['test_data']}")
    if data.get("image_size"):
        parts.append("images resized to " + "×".join(str(s) for s in data["image_size"]))
    if data.get("data_dir"):
        parts.append(f"data folder {data['data_dir']}")
    if data.get("stream"):
        parts.append("training split streamed from disk")
    return f"{data.get('spec', '?')} ({', '.join(parts)})"


def splits_text(splits: Mapping[str, Any]) -> str:
    """``train 1437, validation 180, test 180 examples``."""
    names = {"train": "train", "val": "validation", "test": "test"}
    order = [k for k in names if k in splits] + [k for k in splits if k not in names]
    return ", ".join(f"{names.get(k, k)} {splits[k]}" for k in order) + " examples"


def preprocessing_text(prep: Mapping[str, Any]) -> str:
    """How the examples were prepared for the model."""
    if not prep:
        return "not recorded"
    parts = [str(prep.get("kind", "?"))]
    if prep.get("levels"):
        parts.append(f"{prep['levels']} levels scaled to [0, 1]")
    if prep.get("binarize"):
        parts.append("binarised")
    if prep.get("dequantize"):
        parts.append("dequantised (uniform noise)")
    if prep.get("mean") is not None or prep.get("standardised"):
        parts.append("columns standardised")
    return ", ".join(parts)


def _args(values: object) -> str:
    if not isinstance(values, dict) or not values:
        return ""
    return " (" + ", ".join(f"{k} {v}" for k, v in values.items()) + ")"


def model_text(model: Mapping[str, Any]) -> str:
    """Architecture, latent size and the three families: prior, likelihood (decoder), posterior (encoder)."""
    if not model:
        return "not recorded"
    shape = "×".join(str(s) for s in model.get("data_shape", []))
    parts = [f"{model.get('arch', 'mlp')}{_args(model.get('arch_args'))}", f"latent dim {model.get('latent_dim')}",
             f"{model.get('likelihood', 'gaussian')} likelihood{_args(model.get('likelihood_args'))}"]
    if model.get("likelihood", "gaussian") == "gaussian" and "decoder_variance" in model:
        parts[-1] += f", decoder variance {model['decoder_variance']}"
    parts.append(f"{model.get('posterior', 'diagonal')} posterior{_args(model.get('posterior_args'))}")
    parts.append(f"{model.get('prior', 'standard')} prior{_args(model.get('prior_args'))}")
    if model.get("layers", 1) != 1:
        parts.append(f"{model['layers']} stochastic layers")
    return f"data shape {shape}; " + ", ".join(parts)


def training_text(record: RunRecord) -> str:
    """Epochs run of those asked for, and the options that shape training."""
    train = record.section("train")
    done = len(record.history)
    asked = train.get("epochs")
    text = f"{done} epochs" + (f" of {asked}" if isinstance(asked, int) else "")
    if isinstance(asked, int) and done < asked:
        text += " (stopped early)"
    keys: Sequence[tuple[str, str]] = (("objective", "objective"), ("batch_size", "batch size"),
                                       ("lr", "learning rate"), ("schedule", "schedule"), ("beta", "β"),
                                       ("kl_warmup_epochs", "KL warm-up epochs"), ("samples", "samples per example"),
                                       ("seed", "seed"), ("device", "device"), ("precision", "precision"))
    shown = [f"{label} {_fraction(train[key])}" for key, label in keys if train.get(key) is not None]
    used = next((s.get("precision_used") for s in reversed(record.sessions) if s.get("precision_used")), None)
    if train.get("precision") == "auto" and used is not None:        # what auto chose on the training device
        shown = [f"{item} ({used} used)" if item == "precision auto" else item for item in shown]
    floors = train.get("free_bits") or 0
    if floors or (train.get("objective") == "elbo" and (train.get("beta") or 1.0) < 1):
        shown.append("the training objective is not a bound on log p(x)"
                     + (f" (free bits {_fraction(floors)})" if floors else " (β < 1)"))
    return text + (f"; {', '.join(shown)}" if shown else "")
