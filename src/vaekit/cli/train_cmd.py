"""``vaekit train``: load data, fit a VAE, evaluate the best weights on the test split, draw figures.

Option values come from, in increasing precedence: the defaults, ``--config FILE`` (a JSON object
whose keys are the long option names with underscores, e.g. ``{"latent_dim": 2, "hidden": "64,64"}``)
and the command line. ``--resume`` reloads the data, model and training options stored in
RUN_DIR/config.json and continues from RUN_DIR/checkpoints/last; only ``--epochs``, ``--patience``,
``--device``, ``--precision``, ``--val-importance-samples`` and ``--data-dir`` may differ from the
stored run. ``--auto-resume`` resumes when RUN_DIR holds a run and starts it otherwise.

Under ``torchrun`` the command joins the process group and trains data-parallel (see
:mod:`vaekit.distributed`): ``--batch-size`` is the global batch, rank 0 alone writes and evaluates.

The default decoder variance is ``optimal`` (c = the mean squared reconstruction error, σ-VAE):
with images scaled to [0, 1] a fixed c = 1 makes the reconstruction term negligible next to the
KL term and gives blurry reconstructions. ``--seed`` seeds the data split, the initialisation and
training.

Ctrl-C stops training after the current step and saves a checkpoint of that moment (mid-epoch
included) in RUN_DIR/checkpoints; ``vaekit train --out RUN_DIR --resume`` continues from it exactly
(exit code 130).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from ..model import ARCHITECTURES, LIKELIHOODS, VARIANCE_MODES
from ..networks import ACTIVATIONS
from ..train import PRECISIONS

__all__ = ["register"]

EVAL_DATA_SEED = 0
_GROUPS = ("data", "model", "train", "run")


# --------------------------------------------------------------------------- value parsers

def _int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def _float(minimum: float, *, strict: bool = False, below: float | None = None) -> Callable[[str], float]:
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    want = f"a number {bound}" + (f" and < {below:g}" if below is not None else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value <= minimum) or \
                (below is not None and value >= below):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value
    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"unknown {text!r}; choose one of {', '.join(choices)}")
        return text
    return parse


def _hidden(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths such as 200,200, got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"every width must be a positive integer, got {text!r}")
    return widths


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 28x28, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes HxW, got {text!r}")
    return h, w


def _decoder_variance(text: str) -> float | str:
    if text in VARIANCE_MODES:
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number c > 0 or one of {', '.join(VARIANCE_MODES)}, "
                                         f"got {text!r}")
    return value


def _device_name(text: str) -> str:
    if text == "auto":
        return text
    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda or cuda:N") from None
    return text


def _str(text: str) -> str:
    return text


# --------------------------------------------------------------------------- the option table

@dataclass(frozen=True)
class _Opt:
    """One option: ``--{name with dashes}``; also the key ``name`` in a --config file."""

    name: str
    group: str
    parse: Callable[[str], Any] | None    # None: an on/off flag
    default: Any
    help: str
    metavar: str | None = None


_OPTIONS = (
    _Opt("data", "data", _str, "digits", "dataset name (digits, mnist, fashion-mnist) or a .npy/.npz/.csv/IDX "
         "file or image folder", "SPEC"),
    _Opt("data_dir", "data", _str, None, "where the mnist / fashion-mnist files are", "DIR"),
    _Opt("download", "run", None, False, "download mnist / fashion-mnist if missing"),
    _Opt("val_fraction", "data", _float(0.0, below=1.0), 0.1, "share of the training data held out for validation",
         "F"),
    _Opt("test_fraction", "data", _float(0.0, below=1.0), 0.1,
         "share held out for testing (datasets without their own test split)", "F"),
    _Opt("image_size", "data", _image_size, None, "resize the images of a folder to HxW", "HxW"),
    _Opt("stream", "data", None, False, "memory-map a .npy --data file and read its training split in shuffled "
         "blocks, for data larger than memory"),
    _Opt("latent_dim", "model", _int(1), 16, "latent dimensions K", "K"),
    _Opt("likelihood", "model", _choice(*LIKELIHOODS), "gaussian", "decoder likelihood: gaussian or bernoulli "
         "(bernoulli binarises images dynamically, gaussian dequantises them)", "{gaussian,bernoulli}"),
    _Opt("decoder_variance", "model", _decoder_variance, "optimal", "the Gaussian decoder's c: a number > 0, "
         "learned, learned-per-dim or optimal (c = mean squared error)", "C"),
    _Opt("arch", "model", _choice(*ARCHITECTURES), "mlp", "network: mlp, or linear (affine encoder and decoder)",
         "{mlp,linear}"),
    _Opt("hidden", "model", _hidden, (200, 200), "hidden layer widths of the mlp, comma-separated", "W,W"),
    _Opt("activation", "model", _choice(*ACTIVATIONS), "tanh", f"activation of the mlp: {', '.join(ACTIVATIONS)}",
         "NAME"),
    _Opt("posterior", "model", _choice("diagonal", "full"), "diagonal", "covariance of q(z|x): diagonal or full",
         "{diagonal,full}"),
    _Opt("objective", "train", _choice("elbo", "iwae"), "elbo", "training objective: elbo or iwae",
         "{elbo,iwae}"),
    _Opt("samples", "train", _int(1), 1, "draws of z per example (S for elbo, K for iwae)", "K"),
    _Opt("beta", "train", _float(0.0), 1.0, "weight β of the KL term", "B"),
    _Opt("kl_warmup", "train", _float(0.0), 0.0, "epochs over which β ramps up linearly from 0", "EPOCHS"),
    _Opt("free_bits", "train", _float(0.0), 0.0, "free bits λ per latent dimension (nats)", "L"),
    _Opt("epochs", "train", _int(1), 50, "training epochs", "N"),
    _Opt("batch_size", "train", _int(1), 128, "examples per step", "N"),
    _Opt("lr", "train", _float(0.0, strict=True), 1e-3, "learning rate of Adam", "LR"),
    _Opt("weight_decay", "train", _float(0.0), 0.0, "decoupled weight decay (AdamW when > 0)", "WD"),
    _Opt("schedule", "train", _choice("constant", "cosine"), "constant", "learning-rate schedule",
         "{constant,cosine}"),
    _Opt("warmup_steps", "train", _int(0), 0, "linear learning-rate warm-up steps", "N"),
    _Opt("grad_clip", "train", _float(0.0, strict=True), None, "clip the total gradient norm to this value", "G"),
    _Opt("patience", "train", _int(1), None, "stop after this many epochs without a better validation ELBO", "N"),
    _Opt("seed", "train", _int(0), 0, "seed of the data split, the initialisation and training", "S"),
    _Opt("device", "train", _device_name, "auto", "torch device: auto (cuda when available), cpu, cuda, cuda:N",
         "D"),
    _Opt("precision", "train", _choice(*PRECISIONS), "fp32", "fp32, or autocast the forward pass to bf16 or fp16 "
         "(fp16 with dynamic loss scaling)", "{fp32,bf16,fp16}"),
    _Opt("val_importance_samples", "train", _int(0), 0,
         "also estimate the validation log-likelihood each epoch with K importance samples (0: off)", "K"),
    _Opt("importance_samples", "run", _int(1), 100, "importance samples for the final test log-likelihood", "K"),
    _Opt("out", "run", _str, None, "run directory (default: runs/<data>-<timestamp>; required with --resume)",
         "RUN_DIR"),
    _Opt("no_progress", "run", None, False, "no progress bars (they are shown only on a terminal anyway)"),
    _Opt("no_figures", "run", None, False, "skip the figures and report.html"),
)
_BY_NAME = {o.name: o for o in _OPTIONS}
#: Option name -> TrainConfig field, where they differ.
_TRAIN_FIELD = {"kl_warmup": "kl_warmup_epochs", "patience": "early_stopping_patience"}
_DATA_FIELD = {"data": "spec"}
#: Options that may change when a run is resumed.
_RESUMABLE = ("epochs", "patience", "device", "val_importance_samples", "data_dir", "precision")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def register(subparsers) -> None:
    """Add ``vaekit train`` to ``subparsers``."""
    p = subparsers.add_parser(
        "train", help="train a VAE and write a run directory",
        description=(__doc__ or "").split("\n\n", 1)[1] + "\nexample:\n  vaekit train --data digits --latent-dim 2 "
        "--epochs 30 --out runs/digits",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    titles = {"data": "data", "model": "model", "train": "training", "run": "run"}
    groups = {g: p.add_argument_group(titles[g]) for g in _GROUPS}
    for opt in _OPTIONS:
        default = "" if opt.default is None else f" (default: {_show(opt.default)})"
        if opt.parse is None:
            groups[opt.group].add_argument(_flag(opt.name), dest=opt.name, action="store_true", default=None,
                                           help=opt.help)
        else:
            groups[opt.group].add_argument(_flag(opt.name), dest=opt.name, type=opt.parse, default=None,
                                           metavar=opt.metavar, help=opt.help + default)
    groups["run"].add_argument("--resume", action="store_true",
                               help="continue the run in --out from its last checkpoint")
    groups["run"].add_argument("--auto-resume", action="store_true",
                               help="continue the run in --out if there is one, else start it (for restarts by "
                                    "torchrun --max-restarts, which repeat the same command)")
    groups["run"].add_argument("--config", metavar="FILE", type=Path, default=None,
                               help="JSON file of option values (keys: long option names with underscores); "
                                    "the command line overrides it")
    p.set_defaults(func=_cmd_train)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------- resolving options

def _from_file(path: Path) -> dict[str, Any]:
    """The option values in a --config file, parsed like the command line."""
    if not path.is_file():
        raise ConfigError(f"--config {path}: file not found")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"--config {path}: expected a JSON object of option values")
    values: dict[str, Any] = {}
    for key, value in doc.items():
        opt = _BY_NAME.get(key)
        if opt is None:
            raise ConfigError(f"--config {path}: unknown key {key!r}; keys are the long option names with "
                              "underscores, e.g. latent_dim")
        if value is None:
            continue
        if opt.parse is None:
            if not isinstance(value, bool):
                raise ConfigError(f"--config {path}: {key} must be true or false, got {value!r}")
            values[key] = value
            continue
        if isinstance(value, list):
            text = ("x" if key == "image_size" else ",").join(str(v) for v in value)
        elif isinstance(value, (bool, dict)):
            raise ConfigError(f"--config {path}: {key}: unexpected value {value!r}")
        else:
            text = str(value)
        try:
            values[key] = opt.parse(text)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"--config {path}: {key}: {exc}") from None
    return values


def _resolve(args: argparse.Namespace) -> tuple[dict[str, Any], set[str]]:
    """All option values (defaults < --config file < command line) and the names set explicitly."""
    values = {o.name: o.default for o in _OPTIONS}
    explicit: dict[str, Any] = _from_file(args.config) if args.config is not None else {}
    explicit.update({o.name: getattr(args, o.name) for o in _OPTIONS if getattr(args, o.name) is not None})
    values.update(explicit)
    return values, set(explicit)


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(name).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return name


def _data_spec(values: dict[str, Any]):
    from ..runs import DataSpec

    return DataSpec(spec=values["data"], data_dir=values["data_dir"], seed=values["seed"],
                    val_fraction=values["val_fraction"], test_fraction=values["test_fraction"],
                    image_size=values["image_size"], stream=values["stream"])


def _model_config(values: dict[str, Any], data_shape: tuple[int, ...]):
    from ..model import VAEConfig

    return VAEConfig(data_shape=data_shape, latent_dim=values["latent_dim"], arch=values["arch"],
                     hidden=values["hidden"], activation=values["activation"], likelihood=values["likelihood"],
                     decoder_variance=values["decoder_variance"], posterior=values["posterior"])


def _train_config(values: dict[str, Any]):
    from ..train import TrainConfig

    fields = {_TRAIN_FIELD.get(o.name, o.name): values[o.name] for o in _OPTIONS if o.group == "train"}
    fields["device"] = _device(values["device"])
    return TrainConfig(**fields)


def _stored_values(run_dir: Path) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """The option values a run was trained with, its VAEConfig and its config.json ``extra``."""
    from ..data import Preprocessing
    from ..io import read_config
    from ..runs import DataSpec
    from ..train import TrainConfig

    config, extra = read_config(run_dir)
    source = run_dir / "config.json"
    try:
        data = DataSpec.from_dict(extra["data"])
        train = TrainConfig.from_dict(extra["train"])
        Preprocessing.from_dict(extra["preprocessing"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{source}: not a run written by 'vaekit train' (missing or bad {exc})") from None
    values = {o.name: o.default for o in _OPTIONS}
    values.update({name: getattr(data, _DATA_FIELD.get(name, name)) for name in
                   ("data", "data_dir", "val_fraction", "test_fraction", "image_size", "stream")})
    values.update({name: getattr(config, name) for name in
                   ("latent_dim", "likelihood", "decoder_variance", "arch", "hidden", "activation", "posterior")})
    values.update({o.name: getattr(train, _TRAIN_FIELD.get(o.name, o.name)) for o in _OPTIONS if o.group == "train"})
    return values, config, extra


def _merge_for_resume(run_dir: Path, values: dict[str, Any], explicit: set[str]) -> tuple[dict[str, Any], Any, dict]:
    stored, config, extra = _stored_values(run_dir)
    merged = dict(stored)
    for name in explicit:
        if _BY_NAME[name].group == "run":
            merged[name] = values[name]
            continue
        new, old = values[name], stored[name]
        if name == "device":
            merged[name] = new
            continue
        if name == "decoder_variance" and not isinstance(new, str):
            same = not isinstance(old, str) and float(new) == float(old)
        else:
            same = new == old
        if not same and name not in _RESUMABLE:
            raise ConfigError(f"{_flag(name)}: the run in {run_dir} was trained with {_show(old)}; it cannot change "
                              f"on --resume (only {', '.join(_flag(n) for n in _RESUMABLE)} can)")
        merged[name] = new
    if "device" not in explicit:
        merged["device"] = "auto"
    return merged, config, extra


# --------------------------------------------------------------------------- the command

def _default_out(spec: str) -> Path:
    name = Path(spec).stem if spec not in ("digits", "mnist", "fashion-mnist") else spec
    return Path("runs") / f"{name or 'data'}-{time.strftime('%Y%m%d-%H%M%S')}"


def _epoch_printer(total: int) -> Callable[[Any], None]:
    def show(m) -> None:
        skipped = f"  skipped {m.skipped_steps} steps" if m.skipped_steps else ""
        print(f"epoch {m.epoch:>{len(str(total))}}/{total}  train ELBO {m.train_elbo:.4f}  KL {m.train_kl:.4f}  "
              f"val ELBO {m.val_elbo:.4f}  ({m.seconds:.2f} s){skipped}", flush=True)
    return show


def _cmd_train(args: argparse.Namespace) -> int:
    from .. import distributed

    try:
        code = _train(args)
    except BaseException:
        distributed.shutdown(wait=False)
        raise
    distributed.shutdown()
    return code


def _train(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..data import Preprocessing, fit_preprocessing
    from ..model import build_vae
    from ..runs import load_run
    from ..train import fit

    values, explicit = _resolve(args)
    if args.auto_resume:
        if values["out"] is None:
            raise ConfigError("--auto-resume: needs --out RUN_DIR")
        args.resume = (Path(values["out"]) / "config.json").is_file()
    if args.resume:
        if values["out"] is None:
            raise ConfigError("--resume: needs --out RUN_DIR, the run to continue")
        run_dir = Path(values["out"])
        if not (run_dir / "config.json").is_file():
            raise ConfigError(f"--resume: {run_dir} holds no run to resume (no config.json)")
        values, model_config, extra = _merge_for_resume(run_dir, values, explicit)
        data_spec = _data_spec(values)
        preprocessing = Preprocessing.from_dict(extra["preprocessing"])
    else:
        run_dir = Path(values["out"]) if values["out"] is not None else _default_out(values["data"])
        if (run_dir / "config.json").exists() or (run_dir / "checkpoints").exists():
            raise ConfigError(f"--out {run_dir}: already holds a run; pass --resume to continue it or choose "
                              "another directory")
        data_spec = _data_spec(values)
    values["device"] = distributed.init_from_env(_device(values["device"]))   # torchrun: join the process group
    main = distributed.is_main()
    train_config = _train_config(values)
    progress = not values["no_progress"] and sys.stderr.isatty() and main

    dataset = data_spec.load(download=values["download"], progress=progress)
    if not args.resume:
        preprocessing = fit_preprocessing(dataset, values["likelihood"])
        model_config = _model_config(values, tuple(dataset.shape))
    elif tuple(dataset.shape) != tuple(model_config.data_shape):
        raise ConfigError(f"--data {data_spec.spec}: examples of shape {tuple(dataset.shape)} do not match the "
                          f"run's model {tuple(model_config.data_shape)}")
    train_x = dataset.train if data_spec.stream else preprocessing.prepare(dataset.train)
    val_x = preprocessing.prepare(dataset.val)
    if val_x.shape[0] == 0:
        raise ConfigError("--val-fraction: the validation split is empty; validation needs at least one example")
    torch.manual_seed(train_config.seed)
    model = build_vae(model_config)
    extra = {"preprocessing": preprocessing.to_dict(), "data": data_spec.to_dict(), "train": train_config.to_dict()}
    distributed.barrier()                             # every rank has checked --out before rank 0 writes there
    if not args.resume and main:
        from ..io import save_model

        save_model(model, run_dir, extra=extra)       # config.json first: the run can be resumed from now on

    callbacks = [] if progress or not main else [_epoch_printer(train_config.epochs)]
    try:
        result = fit(model, train_x, val_x, train_config, preprocessing=preprocessing, run_dir=run_dir,
                     resume=args.resume, progress=progress, callbacks=callbacks, model_extra=extra)
    except KeyboardInterrupt:
        if main:
            print(f"vaekit train: interrupted; resume with: vaekit train --out {shlex.quote(str(run_dir))} --resume",
                  file=sys.stderr)
        return 130
    if not main:
        return 0                                      # rank 0 evaluates and writes the figures

    run = load_run(run_dir, map_location=train_config.device)
    run.model.eval()
    stopped = ", stopped early" if result.stopped_early else ""
    summary = [f"run directory: {run_dir}",
               (f"best validation ELBO: {result.best_val_elbo:.4f} nats (epoch {result.best_epoch} of "
                f"{len(result.history)}{stopped})")]
    split, x_raw, labels = "test", dataset.test, dataset.test_labels
    if x_raw is None or len(x_raw) < 2:
        split, x_raw, labels = "val", dataset.val, dataset.val_labels
    metrics: dict[str, Any] = {"best epoch": result.best_epoch, "best val_elbo": result.best_val_elbo}
    if result.history:
        metrics.update({f"last epoch: {k}": v for k, v in result.history[-1].to_dict().items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if len(x_raw) >= 2:
        from ..evaluate import evaluate
        from ..io import atomic_write_json
        from ..runs import eval_tensor

        x = eval_tensor(preprocessing, x_raw, seed=EVAL_DATA_SEED, device=train_config.device)
        torch.manual_seed(train_config.seed)
        evaluation = evaluate(run.model, x, importance_samples=values["importance_samples"],
                              levels=preprocessing.levels if preprocessing.dequantize else None, progress=progress)
        doc = {"run_dir": str(run_dir), "split": split, "data": data_spec.to_dict(), "limit": None,
               "seed": train_config.seed, **evaluation.to_dict()}
        atomic_write_json(run_dir / f"evaluation-{split}.json", doc)
        metrics.update({f"{split}: {k}": v for k, v in evaluation.to_dict().items()})
        summary.append(f"{split} ELBO: {evaluation.elbo:.4f} nats   log p(x) (K = {evaluation.importance_samples}): "
                       f"{evaluation.log_likelihood:.4f} ± {evaluation.log_likelihood_se:.4f} nats")
        if evaluation.bits_per_dim is not None:
            summary.append(f"{split} bits per dim: {evaluation.bits_per_dim:.4f}")
        summary.append(f"active units: {evaluation.active_units} of {evaluation.latent_dim}")
        if not values["no_figures"]:
            from ..figures import write_figures, write_run_report

            figures = write_figures(run_dir, model=run.model, x=x, labels=labels,
                                    history=[m.to_dict() for m in result.history], seed=train_config.seed)
            config = {"model": model_config.to_dict(), "data": data_spec.to_dict(), "train": train_config.to_dict(),
                      "preprocessing": {"kind": preprocessing.kind, "levels": preprocessing.levels,
                                        "binarize": preprocessing.binarize, "dequantize": preprocessing.dequantize,
                                        "standardised": preprocessing.mean is not None}}
            report = write_run_report(run_dir, metrics=metrics, figures=figures, config=config)
            summary.append(f"report: {report}")
    for line in summary:
        print(line)
    return 0
