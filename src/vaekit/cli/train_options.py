"""The options of ``vaekit train``: one table (:data:`OPTIONS`) that makes both the command-line flags
and the keys of a ``--config`` file, their value parsers, and how the values become the run's
configurations (:class:`~vaekit.store.runs.DataSpec`, :class:`~vaekit.models.config.VAEConfig`,
:class:`~vaekit.training.TrainConfig`), fresh or merged with a stored run for ``--resume``.

Values come from, in increasing precedence: the defaults, ``--config FILE`` and the command line
(:func:`resolve`); :mod:`vaekit.cli.train_resume` merges them with a stored run's on ``--resume``.
``--trust-code`` is not an option of the table: it is never stored, may differ on resume, and a
``--config`` file cannot give it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaekit.cli.option_values import (
    arch_name,
    choice,
    decoder_variance,
    device_name,
    image_size,
    integer,
    json_object,
    number,
    text,
    widths,
)
from vaekit.errors import ConfigError, UntrustedCodeError
from vaekit.store.documents import read_json

if TYPE_CHECKING:
    from vaekit.models.config import VAEConfig
    from vaekit.store.runs import DataSpec
    from vaekit.training import TrainConfig

__all__ = ["Opt", "OPTIONS", "BY_NAME", "GROUPS", "RESUMABLE", "MLP_OPTIONS", "JSON_OPTIONS", "MODEL_FIELDS",
           "flag", "show", "resolve",
           "data_spec", "check_test_data", "arch_args", "model_config", "option_error", "train_config", "train_device",
           "refuse_untrusted", "normalise_arch"]

GROUPS = ("data", "model", "train", "run")

# Building the parser (``vaekit train --help``) imports no torch: the modules that hold these names
# import it. So the names are written here, each tuple equal to the keys of the table its key names
# (MODULE:TABLE; tests/test_cli_terminal.py checks them), and the modules are imported when a command runs.
MIRRORED: dict[str, tuple[str, ...]] = {
    "vaekit.models.likelihoods:LIKELIHOODS": ("gaussian", "bernoulli", "discretized-logistic",
                                              "discretized-logistic-mixture"),
    "vaekit.models.posteriors:POSTERIORS": ("diagonal", "full", "iaf"),
    "vaekit.models.priors:PRIORS": ("standard", "mixture", "vamp"),
    "vaekit.models.networks:ACTIVATIONS": ("tanh", "relu", "elu", "gelu", "silu", "softplus", "leaky_relu"),
    "vaekit.inference.training_objectives:OBJECTIVES": ("elbo", "iwae", "miwae", "piwae", "ciwae", "vr", "btcvae"),
    "vaekit.inference.objectives:GRADIENTS": ("reparam", "stl", "dreg"),
    "vaekit.training.config:PRECISIONS": ("auto", "fp32", "bf16", "fp16"),
    "vaekit.data.preprocessing:STANDARDIZE": ("columns", "none"),
    "vaekit.models.hierarchical:INFERENCE": ("bottom-up", "top-down"),
}
LIKELIHOODS = MIRRORED["vaekit.models.likelihoods:LIKELIHOODS"]
POSTERIORS = MIRRORED["vaekit.models.posteriors:POSTERIORS"]
PRIORS = MIRRORED["vaekit.models.priors:PRIORS"]
ACTIVATIONS = MIRRORED["vaekit.models.networks:ACTIVATIONS"]
OBJECTIVES = MIRRORED["vaekit.inference.training_objectives:OBJECTIVES"]
PRECISIONS = MIRRORED["vaekit.training.config:PRECISIONS"]
GRADIENTS = MIRRORED["vaekit.inference.objectives:GRADIENTS"]
#: Objectives bounded by importance weights, whose optimum decoder variance is not c* = the mean squared error.
IMPORTANCE_WEIGHTED = ("iwae", "miwae", "piwae", "ciwae", "vr")
STANDARDIZE = MIRRORED["vaekit.data.preprocessing:STANDARDIZE"]
INFERENCE = MIRRORED["vaekit.models.hierarchical:INFERENCE"]
#: Constants of the same modules, mirrored the same way (MODULE:NAME -> value).
MIRRORED_VALUES: dict[str, Any] = {"vaekit.models.hierarchical:MAX_LAYERS": 8,
                                   "vaekit.training.distributed:DEFAULT_TIMEOUT_S": 600.0}
MAX_LAYERS = MIRRORED_VALUES["vaekit.models.hierarchical:MAX_LAYERS"]
DEFAULT_TIMEOUT_S = MIRRORED_VALUES["vaekit.training.distributed:DEFAULT_TIMEOUT_S"]


# --------------------------------------------------------------------------- the option table

@dataclass(frozen=True)
class Opt:
    """One option: ``--{name with dashes}``; also the key ``name`` in a --config file."""

    name: str
    group: str
    parse: Callable[[str], Any] | None    # None: an on/off flag
    default: Any
    help: str
    metavar: str | None = None


OPTIONS = (
    Opt("data", "data", text, "digits", "dataset name (digits, mnist, fashion-mnist, shapes) or a .npy/.npz/.csv/IDX "
        "file or image folder", "SPEC"),
    Opt("data_dir", "data", text, None, "where the mnist / fashion-mnist files are", "DIR"),
    Opt("download", "run", None, False, "download mnist / fashion-mnist if missing"),
    Opt("val_fraction", "data", number(0.0, below=1.0), 0.1, "share of the training data held out for validation",
        "F"),
    Opt("test_fraction", "data", number(0.0, below=1.0), 0.1,
        "share held out for testing (datasets without their own test split)", "F"),
    Opt("image_size", "data", image_size, None, "resize the images of a folder to HxW", "HxW"),
    Opt("stream", "data", None, False, "memory-map a .npy --data file and read its training split in shuffled "
        "blocks, for data larger than memory"),
    Opt("test_data", "data", text, None, "separate test data (a dataset name or file, like --data): the "
        "end-of-training evaluation uses every example of it, with the training preprocessing; --data is then "
        "split into training and validation only", "SPEC"),
    Opt("label_column", "data", text, None, "the column of a .csv --data file that holds integer class labels "
        "(a 0-based index or a header name); it is left out of the examples (labels colour the latent scatter, "
        "and --conditional trains on them)", "COL"),
    Opt("standardize", "data", choice(*STANDARDIZE), "columns", "continuous tabular data: standardise each "
        "column with the training mean and std (columns) or use the values as given (none); images and binary "
        "data ignore it. Reported log-densities are of the data as given either way", "{" + ",".join(STANDARDIZE)
        + "}"),
    Opt("latent_dim", "model", integer(1), 16, "latent dimensions K (of z_1 with --layers > 1)", "K"),
    Opt("likelihood", "model", choice(*LIKELIHOODS), "gaussian", "decoder likelihood: " + ", ".join(LIKELIHOODS)
        + " (bernoulli binarises images dynamically, gaussian dequantises them, the discretized logistics give "
        "the exact probabilities of the images' integer levels)", "{" + ",".join(LIKELIHOODS) + "}"),
    Opt("decoder_variance", "model", decoder_variance, "optimal", "the Gaussian decoder's c: a number > 0, "
        "learned, learned-per-dim or optimal (c = mean squared error; default optimal, learned with --objective iwae)",
        "C"),
    Opt("arch", "model", arch_name, "mlp", "network: mlp, linear (affine encoder and decoder), conv or resnet "
        "(convolutional, for images (C, H, W) of any size), or MODULE:FUNCTION, "
        "your own builder (MODULE a module name or a .py file; needs --trust-code), called as "
        "FUNCTION(data_shape=..., latent_dim=..., **arch_args) and returning (encoder_trunk, decoder_net)",
        "{mlp,linear,conv,resnet,MODULE:FUNCTION}"),
    Opt("arch_args", "model", json_object, None, "arguments of --arch, a JSON object (mlp: hidden, activation; "
        "conv: width (channels of the first stage, default 32), stages (stride-2 down-samplings, default 2), "
        "activation (default relu); resnet: those and blocks (residual blocks per stage, default 1); "
        "MODULE:FUNCTION: its keyword arguments)", "JSON"),
    Opt("hidden", "model", widths, (200, 200), "hidden layer widths of the mlp, comma-separated", "W,W"),
    Opt("activation", "model", choice(*ACTIVATIONS), "tanh", f"activation of the mlp: {', '.join(ACTIVATIONS)}",
        "NAME"),
    Opt("likelihood_args", "model", json_object, None, "arguments of --likelihood, a JSON object (for the "
        "likelihoods that take any; discretized-logistic: bins, scale network|learned; "
        "discretized-logistic-mixture: bins, components; bins default to the images' levels)", "JSON"),
    Opt("posterior", "model", choice(*POSTERIORS), "diagonal", "posterior family q(z|x): "
        + ", ".join(POSTERIORS), "{" + ",".join(POSTERIORS) + "}"),
    Opt("posterior_args", "model", json_object, None, "arguments of --posterior, a JSON object (iaf: steps, "
        "default 2; hidden, the widths of each step's MADE, default [64, 64]; context, the width of h(x), default 32)",
        "JSON"),
    Opt("prior", "model", choice(*PRIORS), "standard", "prior p(z): " + ", ".join(PRIORS),
        "{" + ",".join(PRIORS) + "}"),
    Opt("prior_args", "model", json_object, None, "arguments of --prior, a JSON object (mixture: components, "
        "default 10; vamp: pseudo_inputs, default 500, init_mean 0.5, init_std 0.01)", "JSON"),
    Opt("layers", "model", integer(1), 1, f"stochastic layers z_1..z_L (1 to {MAX_LAYERS}; Burda et al. 2016: "
        "q(z_1|x) q(z_2|z_1)..., p(z_L) ... p(z_1|z_2) p(x|z_1))", "L"),
    Opt("layer_args", "model", json_object, None, "arguments of the layers above the first, a JSON object: "
        "latent_dims (sizes of z_2..z_L; default each half the one below), hidden (one list of widths per upper "
        "layer; default the mlp's halved layer by layer), activation", "JSON"),
    Opt("inference", "model", choice(*INFERENCE), "bottom-up", "direction of q(z|x) with --layers > 1: bottom-up "
        "(q(z_1|x) q(z_2|z_1)...) or top-down (Ladder VAE: a bottom-up pass merged by precision into the generative "
        "top-down path, a KL per layer)", "{" + ",".join(INFERENCE) + "}"),
    Opt("conditional", "model", None, False, "a conditional VAE (Sohn et al. 2015): the encoder and the decoder "
        "take the data's class labels y, q(z|x,y) and p(x|z,y); the prior p(z) stays --prior (N(0, I) by default). "
        "Labels: digits, mnist, fashion-mnist, an IDX images file with its labels file beside it, .npz y, a folder "
        "of class sub-folders, or a .csv --label-column. Then 'vaekit sample RUN --label Y'"),
    Opt("objective", "train", choice(*OBJECTIVES), "elbo", f"training objective: {', '.join(OBJECTIVES)} "
        "(the training metrics report the ELBO beside it)", "{" + ",".join(OBJECTIVES) + "}"),
    Opt("samples", "train", integer(1), 1, "draws of z per example (S for elbo, K for iwae, ciwae, vr; K per group "
        "for miwae, piwae)", "K"),
    Opt("objective_args", "train", json_object, None, "the objective's own options, a JSON object (miwae, piwae: "
        "groups M, default 8; ciwae: beta, default 0.5; vr: alpha, default 0.5; btcvae: alpha, beta, gamma, "
        "default 1, 6, 1, estimator mws|mss, dataset_size for mss)", "JSON"),
    Opt("gradient", "train", choice(*GRADIENTS), "reparam", "the encoder's gradient estimator: reparam, stl "
        "(sticking the landing; elbo) or dreg (doubly reparameterised; iwae, miwae, piwae)",
        "{" + ",".join(GRADIENTS) + "}"),
    Opt("beta", "train", number(0.0, maximum=1e6), 1.0, "weight β of the KL term", "B"),
    Opt("kl_warmup", "train", number(0.0, maximum=1e6), 0.0, "epochs over which β ramps up linearly from 0",
        "EPOCHS"),
    Opt("free_bits", "train", number(0.0, maximum=1e3), 0.0, "free bits λ per latent dimension (nats), where the KL "
        "is their sum (--posterior diagonal, --prior standard); per stochastic layer with --layers > 1", "L"),
    Opt("epochs", "train", integer(1), 50, "training epochs", "N"),
    Opt("batch_size", "train", integer(1), 128, "examples per step", "N"),
    Opt("lr", "train", number(0.0, strict=True), 1e-3, "learning rate of Adam (--arch linear: 0.03, --init ppca: "
        "1e-4, unless set)", "LR"),
    Opt("weight_decay", "train", number(0.0, maximum=1e2), 0.0, "decoupled weight decay (AdamW when > 0)", "WD"),
    Opt("schedule", "train", choice("constant", "cosine"), "constant", "learning-rate schedule (--arch linear: "
        "cosine unless set)",
        "{constant,cosine}"),
    Opt("warmup_steps", "train", integer(0), 0, "linear learning-rate warm-up steps", "N"),
    Opt("grad_clip", "train", number(0.0, strict=True), None, "clip the total gradient norm to this value", "G"),
    Opt("patience", "train", integer(1), None, "stop after this many epochs without a better validation ELBO", "N"),
    Opt("seed", "train", integer(0), 0, "seed of the data split, the initialisation and training", "S"),
    Opt("device", "train", device_name, "auto", "torch device: auto (cuda when available), cpu, cuda, cuda:N",
        "D"),
    Opt("precision", "train", choice(*PRECISIONS), "auto", "fp32; bf16 (matrix products in bfloat16 with float32 "
        "accumulation); fp16 (autocast, dynamic loss scaling); auto: bf16 on a CPU with native bf16 "
        "products (AVX512-BF16, AMX), else fp32", "{auto,fp32,bf16,fp16}"),
    Opt("val_importance_samples", "train", integer(0), 0,
        "also estimate the validation log-likelihood each epoch with K importance samples (0: off)", "K"),
    Opt("init", "run", choice("random", "ppca"), "random", "initial weights: random, or ppca (--arch linear with a "
        "Gaussian posterior: the closed-form pPCA maximum-likelihood decoder of the training split and the exact "
        "posterior encoder, the optimum the ELBO seeks)", "{random,ppca}"),
    Opt("importance_samples", "run", integer(1), 100, "importance samples for the final test log-likelihood", "K"),
    Opt("out", "run", text, None, "run directory (default: runs/<data>-<timestamp>; required with --resume)",
        "RUN_DIR"),
    Opt("no_progress", "run", None, False, "no progress bars (they are shown only on a terminal anyway)"),
    Opt("no_figures", "run", None, False, "skip the figures and report.html"),
    Opt("tensorboard_images", "run", integer(0), 1, "epochs between the sample and reconstruction images written to "
        "TensorBoard (RUN_DIR/tensorboard, when tensorboard is installed; 0: none)", "N"),
    Opt("tensorboard_steps", "run", integer(1), 20, "steps per point of TensorBoard's step/ scalars, each point the "
        "mean over its steps (1: every step; a long run writes hundreds of thousands of steps)", "N"),
    Opt("mlflow", "run", text, None, "also log the run to MLflow (pip install 'vaekit[mlflow]'): params, metrics "
        "per epoch, the evaluation, figures and report. A directory is a local store (DIR/mlflow.db and "
        "DIR/artifacts, offline); a value with a scheme (sqlite:///x.db, http://host:5000) is a tracking URI. "
        "The location is checked before anything is written (a server must accept a connection within 5 s; "
        "MLflow's HTTP calls give up after about 10 s); a tracker that fails once training runs is a warning, and "
        "the run goes on",
        "DIR|URI"),
    Opt("mlflow_experiment", "run", text, "vaekit", "the MLflow experiment of --mlflow", "NAME"),
    Opt("dist_timeout", "run", number(0.0, strict=True, maximum=1e6), DEFAULT_TIMEOUT_S, "under torchrun: seconds a "
        "rank waits for the others (at a step, a validation, a checkpoint) before the run fails, so that a frozen "
        "rank stops the run rather than holding it", "SECONDS"),
)
#: Training defaults of a model family (--arch), used unless the option is set. The linear family (pPCA by the
#: ELBO) has no saturating units and one smooth optimum, the closed-form maximum likelihood, so it takes Adam
#: steps 30× larger, decayed by a cosine to remove Adam's stationary jitter (∝ the step size) at the end: on
#: pPCA tables (benchmarks/ppca_heldout.py) it then lands within 0.05 nats of the optimum in 200 epochs, where
#: the generic 1e-3 ended 1.5 nats short.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {"linear": {"lr": 0.03, "schedule": "cosine"}}
#: Training defaults of a closed-form start (--init), used unless the option is set: from the optimum, every Adam
#: step (about lr per parameter, whatever the gradient) is noise, so the steps are 10× below the generic 1e-3.
INIT_DEFAULTS: dict[str, dict[str, Any]] = {"ppca": {"lr": 1e-4, "schedule": "cosine"}}
BY_NAME = {o.name: o for o in OPTIONS}
#: Option name -> TrainConfig field, where they differ.
TRAIN_FIELD = {"kl_warmup": "kl_warmup_epochs", "patience": "early_stopping_patience"}
DATA_FIELD = {"data": "spec"}
#: Options that may change when a run is resumed.
RESUMABLE = ("epochs", "patience", "device", "val_importance_samples", "data_dir", "precision")
#: The mlp's own options, which fill its arch_args.
MLP_OPTIONS = ("hidden", "activation")
#: Options whose value is a JSON object.
JSON_OPTIONS = ("arch_args", "likelihood_args", "posterior_args", "prior_args", "layer_args", "objective_args")
#: Model options that are VAEConfig fields of the same name, set as given.
MODEL_FIELDS = ("latent_dim", "likelihood", "decoder_variance", "posterior", "prior", "layers",
                "likelihood_args", "posterior_args", "prior_args", "layer_args", "inference")



def flag(name: str) -> str:
    """The command-line flag of option ``name``."""
    return "--" + name.replace("_", "-")


def show(value: Any) -> str:
    """An option value as the user would write it."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


# --------------------------------------------------------------------------- resolving options

def _read_yaml(path: Path) -> Any:
    """The value in a YAML file (``yaml.safe_load``: plain data only, no Python objects); a file that
    is not UTF-8 YAML, or names a key twice in one mapping, is a one-line ConfigError."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:                     # an unhashable key: the base class says so
                    continue
                if repeated:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeys)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({' '.join(str(exc).split())})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"--config {path}: not valid YAML (nested too deeply)") from None


#: Reads a run's own config.json given to --config: (path, document) -> option values
#: (:func:`vaekit.cli.train_resume.config_file_values`, passed in by the caller: that module imports this one).
RunConfigReader = Callable[[Path, dict[str, Any]], dict[str, Any]]


def _from_file(path: Path, read_run_config: RunConfigReader | None) -> dict[str, Any]:
    """The option values in a --config file, parsed like the command line: a JSON object or (.yaml,
    .yml) a YAML mapping of option names, or a run's own config.json (its nested model, data and
    training sections, read by ``read_run_config``)."""
    if not path.is_file():
        raise ConfigError(f"--config {path}: file not found")
    yaml = path.suffix.lower() in (".yaml", ".yml")
    doc = _read_yaml(path) if yaml else read_json(path, ConfigError, label=f"--config {path}")
    if not isinstance(doc, dict):
        raise ConfigError(f"--config {path}: expected a {'YAML mapping' if yaml else 'JSON object'} of option values")
    if "format" in doc and "model" in doc:             # a run's config.json: repeat that run
        if read_run_config is None:
            raise ConfigError(f"--config {path}: a run's config.json is read by 'vaekit train' only")
        doc = read_run_config(path, doc)
    values: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "trust_code":
            raise ConfigError(f"--config {path}: trust_code cannot be set in a file; running the code an --arch "
                              "names needs --trust-code on the command line")
        opt = BY_NAME.get(key)
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
        if key in JSON_OPTIONS and isinstance(value, dict):
            values[key] = value
            continue
        if isinstance(value, (list, tuple)):
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


def resolve(args: argparse.Namespace,
            read_run_config: RunConfigReader | None = None) -> tuple[dict[str, Any], set[str]]:
    """All option values (defaults < --config file < command line) and the names set explicitly;
    ``read_run_config`` reads a run's own config.json given to --config."""
    values = {o.name: o.default for o in OPTIONS}
    explicit: dict[str, Any] = _from_file(args.config, read_run_config) if args.config is not None else {}
    explicit.update({o.name: getattr(args, o.name) for o in OPTIONS if getattr(args, o.name) is not None})
    values.update(explicit)
    if values["objective"] in IMPORTANCE_WEIGHTED and "decoder_variance" not in explicit:
        values["decoder_variance"] = "learned"      # c* = MSE maximises the ELBO, not the IWAE bound
    family = FAMILY_DEFAULTS.get(values["arch"], {}) if values["init"] == "random" else INIT_DEFAULTS[values["init"]]
    for name, value in family.items():
        if name not in explicit:                    # the family's own default, unless the user set one
            values[name] = value
    return values, set(explicit)


def train_device(name: str) -> str:
    """The device to train on: ``auto`` is ``cuda`` when there is a GPU, else ``cpu``; a name without
    an index stays without one (under torchrun each rank then takes ``cuda:LOCAL_RANK``)."""
    from vaekit.devices import resolve_device

    device = resolve_device(name, option="--device")
    return str(device) if name != "auto" and ":" in name else device.type


def data_spec(values: dict[str, Any]) -> DataSpec:
    """The DataSpec the data options name (with --test-data, --data keeps no test split)."""
    from vaekit.store.runs import DataSpec

    test_data = values.get("test_data")
    return DataSpec(spec=values["data"], data_dir=values["data_dir"], seed=values["seed"],
                    val_fraction=values["val_fraction"],
                    test_fraction=0.0 if test_data is not None else values["test_fraction"],
                    image_size=values["image_size"], stream=values["stream"], test_data=test_data,
                    label_column=values.get("label_column"))


def check_test_data(values: dict[str, Any], explicit: set[str]) -> None:
    """--test-fraction does not apply with --test-data (the test examples are that data's): a ConfigError."""
    if values.get("test_data") is not None and "test_fraction" in explicit:
        raise ConfigError(f"--test-fraction: does not apply with --test-data {values['test_data']} (every example "
                          "of that is the test split; --data is split into training and validation only)")


def arch_args(values: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """``arch_args`` for the chosen --arch: for mlp, --hidden and --activation fill them (--arch-args
    may give them instead); for another arch, --hidden or --activation is a usage error."""
    given = dict(values["arch_args"] or {})
    if values["arch"] != "mlp":
        for name in MLP_OPTIONS:
            if name in explicit:
                raise ConfigError(f"{flag(name)}: applies to --arch mlp only, not {values['arch']}; "
                                  "use --arch-args for the arguments of another architecture")
        return given
    for name in MLP_OPTIONS:
        if name in explicit and name in given:
            raise ConfigError(f"{flag(name)}: also given in --arch-args; give it once")
    return {name: values[name] for name in MLP_OPTIONS} | given


def model_config(values: dict[str, Any], explicit: set[str], data_shape: tuple[int, ...], num_classes: int = 0,
                 class_names: tuple[str, ...] = ()) -> VAEConfig:
    """The VAEConfig the model options name, for examples of shape ``data_shape`` (and, with
    ``--conditional``, labels of ``num_classes`` classes named ``class_names``); an impossible value is a
    ConfigError naming its option."""
    from vaekit.models.config import VAEConfig

    objective = values["objective"]
    profiled = values["decoder_variance"] == "optimal" and values["likelihood"] == "gaussian"
    if objective in IMPORTANCE_WEIGHTED and profiled:
        raise ConfigError(f"--decoder-variance optimal: c* = the mean squared error maximises the ELBO, not the "
                          f"{objective} bound; with --objective {objective} use learned, learned-per-dim or a number")
    try:
        return VAEConfig(data_shape=data_shape, arch=values["arch"], arch_args=arch_args(values, explicit),
                         num_classes=num_classes, class_names=class_names,
                         **{name: values[name] for name in MODEL_FIELDS})
    except ConfigError as exc:
        raise option_error(exc) from None


def option_error(exc: ConfigError) -> ConfigError:
    """``exc`` (of the same type) with a leading ``key:`` (or ``key.argument:``) that names an option written as
    its flag."""
    key, sep, rest = str(exc).partition(": ")
    if sep and key in BY_NAME:
        return type(exc)(f"{flag(key)}: {rest}")
    head, dot, field = key.partition(".")             # e.g. posterior_args.covariance: an argument of an option
    if sep and dot and head in BY_NAME:
        return type(exc)(f"{flag(head)}: {field}: {rest}")
    return exc


def train_config(values: dict[str, Any]) -> TrainConfig:
    """The TrainConfig the training options name (the device resolved)."""
    from vaekit.training import TrainConfig

    fields = {TRAIN_FIELD.get(o.name, o.name): values[o.name] for o in OPTIONS if o.group == "train"}
    fields["device"] = train_device(values["device"])
    try:
        return TrainConfig(**fields)
    except ConfigError as exc:
        raise option_error(exc) from None


def refuse_untrusted(arch: str, trust_code: bool) -> None:
    """An UntrustedCodeError (one line naming --trust-code) for user code without the opt-in."""
    from vaekit.models.custom import is_custom_arch

    if is_custom_arch(arch) and not trust_code:
        raise UntrustedCodeError(f"--arch {arch}: names Python code, and importing it would run it; "
                                 "pass --trust-code if you trust that code")


def normalise_arch(arch: str) -> str:
    """``arch`` as a configuration stores it (a builder's .py path made absolute)."""
    from vaekit.models.custom import is_custom_arch, normalise_builder

    return normalise_builder(arch) if is_custom_arch(arch) else arch
