"""``vaekit train --resume``: the option values of a stored run, merged with those given again.

The stored run's values (config.json: the data spec, the model configuration, the training
options) replace the defaults. A data or training option given explicitly must equal the stored
one unless it is in :data:`vaekit.cli.train_options.RESUMABLE`; the model options are applied to
the stored model configuration, and the result must equal it, compared through
``VAEConfig.to_dict()`` (so a relative and an absolute path to the same builder are the same).
``--trust-code`` is never stored and may differ.

The same reading serves ``--config RUN_DIR/config.json`` (:func:`config_file_values`): a run's own
configuration given as a --config file repeats the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaekit.cli import train_options as options
from vaekit.errors import CheckpointError, ConfigError
from vaekit.models.config import VAEConfig
from vaekit.models.likelihoods import build_likelihood
from vaekit.store.layout import RunLayout
from vaekit.store.runs import DataSpec
from vaekit.training import TrainConfig

__all__ = ["merge_for_resume", "run_values", "config_file_values"]

#: VAEConfig.to_dict() key -> the option that sets it (for naming a change refused on --resume).
MODEL_KEY_OPTION = {"data_shape": "data", "arch": "arch", "arch_args": "arch_args",
                    **{name: name for name in options.MODEL_FIELDS}}


def _stored_values(run_dir: Path) -> tuple[dict[str, Any], VAEConfig, dict[str, Any]]:
    """The option values a run was trained with, its VAEConfig and its config.json ``extra``."""
    from vaekit.store.model_files import read_config

    config, extra = read_config(run_dir)
    return run_values(config, extra, RunLayout.of(run_dir).config), config, extra


def run_values(config: VAEConfig, extra: dict[str, Any], source: Path) -> dict[str, Any]:
    """Every option's value for the run a config.json (``source``) describes: the model options from
    its VAEConfig, the data and training options from its ``extra`` (a CheckpointError when these are
    missing); the options a run does not record keep their defaults."""
    from vaekit.data import Preprocessing

    try:
        data = DataSpec.from_dict(extra["data"])
        train = TrainConfig.from_dict(extra["train"])
        preprocessing = Preprocessing.from_dict(extra["preprocessing"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{source}: not a run written by 'vaekit train' (missing or bad {exc})") from None
    values = {o.name: o.default for o in options.OPTIONS}
    values.update({name: getattr(data, options.DATA_FIELD.get(name, name)) for name in
                   ("data", "data_dir", "val_fraction", "test_fraction", "image_size", "stream", "test_data",
                    "label_column")})
    values["conditional"] = config.num_classes > 0
    # --standardize is stored in the preprocessing: "none" only where it applied (continuous tables) and was off
    continuous = build_likelihood(config.likelihood, config.data_shape).data_kind == "continuous"
    if preprocessing.kind == "tabular" and continuous and not preprocessing.standardized:
        values["standardize"] = "none"
    values.update({name: getattr(config, name) for name in ("arch", *options.MODEL_FIELDS)})
    values["arch_args"] = dict(config.arch_args)
    if config.arch == "mlp":
        values["hidden"] = tuple(config.arch_args["hidden"])
        values["activation"] = config.arch_args["activation"]
    values.update({o.name: getattr(train, options.TRAIN_FIELD.get(o.name, o.name))
                   for o in options.OPTIONS if o.group == "train"})
    return values


def config_file_values(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """A run's own config.json (``doc``, read from ``path``) given to ``--config``: the option values
    that repeat the run, as a --config file would write them. Those of the model come as the
    options that make the same VAEConfig (for mlp, --hidden and --activation rather than
    --arch-args). Only values other than the options' defaults are given (as if written in the file),
    --test-fraction not with --test-data, and --device never (the new run runs where it is started:
    auto). The data shape comes from the data; a model option the command line lacks
    (initial_variance other than 1) is a ConfigError."""
    from vaekit.store.documents import read_versioned_json
    from vaekit.store.model_files import FORMAT_VERSION, MODEL_FORMAT

    label = f"--config {path}"
    try:
        doc = read_versioned_json(path, fmt=MODEL_FORMAT, max_version=FORMAT_VERSION, what="model configuration",
                                  missing="file not found")
        model, extra = doc.get("model"), doc.get("extra")
        if not isinstance(model, dict) or not isinstance(extra, dict):
            raise ConfigError(f"{path}: a run's config.json needs the objects \"model\" and \"extra\"")
        config = VAEConfig.from_dict(model)
        values = run_values(config, extra, path)
    except (CheckpointError, ConfigError) as exc:
        message = str(exc)
        raise ConfigError(f"--config {message}" if message.startswith(str(path)) else f"{label}: {message}") from None
    if config.initial_variance != 1.0:
        raise ConfigError(f"{label}: the model's initial_variance {config.initial_variance:g} has no command-line "
                          "option (a run made by 'vaekit train' has 1); make this model from Python")
    names = [o.name for o in options.OPTIONS if o.group in ("data", "model", "train") and o.name != "device"]
    if values["test_data"] is not None:
        names.remove("test_fraction")
    if config.arch == "mlp":
        rest = {k: v for k, v in config.arch_args.items() if k not in options.MLP_OPTIONS}
        values["arch_args"] = rest or None
    else:
        names = [n for n in names if n not in options.MLP_OPTIONS]
    return {name: values[name] for name in names       # no arguments ({}) is the JSON options' default too
            if values[name] not in (None, {}) and values[name] != options.BY_NAME[name].default}


def _requested_model(stored: VAEConfig, merged: dict[str, Any], explicit: set[str]) -> VAEConfig:
    """The model the options given on --resume describe: the stored one with those options applied."""
    d = stored.to_dict()
    for name in options.MODEL_FIELDS:
        if name in explicit:
            d[name] = merged[name]
    arch_changed = "arch" in explicit and options.normalise_arch(merged["arch"]) != stored.arch
    if arch_changed or explicit & {"arch_args", *options.MLP_OPTIONS}:
        arch = merged["arch"] if arch_changed else stored.arch
        if "arch_args" in explicit:
            given = merged["arch_args"]
        else:                      # the mlp's own options are in ``merged`` (stored unless given)
            given = {} if arch_changed or arch == "mlp" else dict(stored.arch_args)
        d["arch"], d["arch_args"] = arch, options.arch_args({**merged, "arch": arch, "arch_args": given}, explicit)
    return VAEConfig.from_dict(d)


def _cannot_change(name: str, run_dir: Path, old: Any) -> ConfigError:
    return ConfigError(f"{options.flag(name)}: the run in {run_dir} was trained with {options.show(old)}; it cannot "
                       f"change on --resume (only {', '.join(options.flag(n) for n in options.RESUMABLE)} can)")


def merge_for_resume(run_dir: Path, values: dict[str, Any],
                     explicit: set[str]) -> tuple[dict[str, Any], VAEConfig, dict[str, Any]]:
    """The option values of a resumed run (the stored ones, with the explicit ones that may change),
    its stored VAEConfig and config.json ``extra``; an option that may not change is a ConfigError."""
    stored, config, extra = _stored_values(run_dir)
    merged = dict(stored)
    for name in explicit:
        group = options.BY_NAME[name].group
        if group in ("run", "model") or name == "device":
            merged[name] = values[name]
            continue
        new, old = values[name], stored[name]
        if new != old and name not in options.RESUMABLE:
            raise _cannot_change(name, run_dir, old)
        merged[name] = new
    requested, current = _requested_model(config, merged, explicit).to_dict(), config.to_dict()
    for key in dict.fromkeys([*current, *requested]):
        old = current.get(key)
        if requested.get(key) != old:
            name = MODEL_KEY_OPTION.get(key, key)
            if key == "arch_args" and not explicit & {"arch_args"}:
                name = next((n for n in options.MLP_OPTIONS if n in explicit), name)
            raise _cannot_change(name, run_dir, stored.get(name, old))
    if bool(merged["conditional"]) != (config.num_classes > 0):
        how = "with" if config.num_classes else "without"
        raise ConfigError(f"--conditional: the run in {run_dir} was trained {how} --conditional; that cannot change "
                          "on --resume")
    if "device" not in explicit:
        merged["device"] = "auto"
    return merged, config, extra
