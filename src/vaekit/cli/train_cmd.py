"""``vaekit train``: load data, fit a VAE, evaluate the best weights on the test split, draw figures.

Option values come from, in increasing precedence: the defaults, ``--config FILE`` and the command
line. FILE is a JSON object, or a YAML mapping (.yaml, .yml), whose keys are the long option names
with underscores, e.g. ``{"latent_dim": 2, "hidden": "64,64"}``; or a run's own config.json, which
repeats that run (the same configuration, and the same weights on the same machine).

``--resume`` reloads the data, model and training options stored in RUN_DIR/config.json and
continues from RUN_DIR/checkpoints/last, saying from which epoch and step; only ``--epochs``,
``--patience``, ``--device``, ``--precision``, ``--val-importance-samples`` and ``--data-dir`` may
differ from the stored run (the model options are compared as the configuration they make).
``--auto-resume`` resumes when RUN_DIR holds a run and starts it otherwise.

Each epoch prints one line (above the progress bar on a terminal); then the evaluation of the best
weights and the figures are announced and timed. A ``--kl-warmup`` longer than ``--epochs`` is
warned about on stderr (the KL weight never reaches ``--beta``).

``--arch MODULE:FUNCTION`` trains your own networks: FUNCTION(data_shape=..., latent_dim=...,
**arch_args) from MODULE (a module name or a .py file) returns (encoder_trunk, decoder_net), with
``--arch-args`` a JSON object. Importing MODULE runs its code, so it needs ``--trust-code`` (as do
the commands that later load the run); without it the command stops and imports nothing.

Under ``torchrun`` the command joins the process group and trains data-parallel (see
:mod:`vaekit.training.distributed`): ``--batch-size`` is the global batch, rank 0 alone writes and evaluates.

The default decoder variance is ``optimal`` (c = the mean squared reconstruction error, σ-VAE):
with images scaled to [0, 1] a fixed c = 1 makes the reconstruction term negligible next to the
KL term and gives blurry reconstructions. ``--seed`` seeds the data split, the initialisation and
training.

Ctrl-C, SIGTERM and SIGHUP (what torchrun, Slurm and Kubernetes send) stop training after the
current step and save a checkpoint of that moment (mid-epoch included; under torchrun with several
processes, the last completed epoch's) in RUN_DIR/checkpoints; ``vaekit train --out RUN_DIR --resume``
continues from it exactly. Exit code 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP, with one line.

The run directory is locked (RUN_DIR/.lock, :mod:`vaekit.store.lock`) from the first write to the
end of the command: a second ``vaekit train`` (or ``evaluate``, ``figures``) on it exits with code 2
and one line naming the process that holds it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaekit.cli import help_text, train_checks, train_stops
from vaekit.cli import labels as label_options
from vaekit.cli import train_options as options
from vaekit.cli.plain_progress import heartbeat, progress_for
from vaekit.errors import ConfigError, VaekitError
from vaekit.store.layout import RunLayout
from vaekit.store.lock import run_lock

if TYPE_CHECKING:                                 # torch is imported only when a command runs
    from vaekit.models.protocol import LatentModel

__all__ = ["register", "add_option_groups", "train_with"]

EVAL_DATA_SEED = 0


def register(subparsers: Any) -> None:
    """Add ``vaekit train`` to ``subparsers``."""
    p = subparsers.add_parser(
        "train", help="train a VAE and write a run directory",
        description=help_text.description((__doc__ or "").split("\n\n", 1)[1]) + "\n\nexamples:\n"
        "  vaekit train --data digits --latent-dim 2 --epochs 30 --out runs/digits\n"
        "  vaekit train --config runs/digits/config.json --out runs/digits-again   # repeat a run\n"
        "  vaekit train --arch my_nets.py:build --arch-args '{\"width\": 16}' --trust-code --out runs/conv",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = add_option_groups(p)
    groups["model"].add_argument("--trust-code", action="store_true",
                                 help="allow --arch MODULE:FUNCTION (or the resumed run's) to import and run that "
                                      "code; never stored with the run")
    groups["run"].add_argument("--resume", action="store_true",
                               help="continue the run in --out from its last checkpoint")
    groups["run"].add_argument("--auto-resume", action="store_true",
                               help="continue the run in --out if there is one, else start it (for restarts by "
                                    "torchrun --max-restarts, which repeat the same command)")
    groups["run"].add_argument("--config", metavar="FILE", type=Path, default=None,
                               help="JSON or YAML (.yaml, .yml) file of option values (keys: the long option "
                                    "names with underscores), or a run's config.json to repeat that run; the "
                                    "command line overrides it")
    p.set_defaults(func=_cmd_train)


def add_option_groups(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Add the option table's flags (:data:`~vaekit.cli.train_options.OPTIONS`, but ``skip``) to ``p`` in
    their groups (each defaulting to None: :func:`~vaekit.cli.train_options.resolve` fills the defaults);
    the groups by name. ``vaekit tune`` takes the same options."""
    titles = {"data": "data", "model": "model", "train": "training", "run": "run"}
    groups = {g: p.add_argument_group(titles[g]) for g in options.GROUPS}
    for opt in options.OPTIONS:
        if opt.name in skip:
            continue
        default = "" if opt.default is None else f" (default: {options.show(opt.default)})"
        if opt.parse is None:
            groups[opt.group].add_argument(options.flag(opt.name), dest=opt.name, action="store_true", default=None,
                                           help=opt.help)
        else:
            groups[opt.group].add_argument(options.flag(opt.name), dest=opt.name, type=opt.parse, default=None,
                                           metavar=opt.metavar, help=opt.help + default)
    return groups


# --------------------------------------------------------------------------- the command

def _default_out(spec: str) -> Path:
    name = Path(spec).stem if spec not in ("digits", "mnist", "fashion-mnist", "shapes") else spec
    return Path("runs") / f"{name or 'data'}-{time.strftime('%Y%m%d-%H%M%S')}"


def _say(progress: bool) -> Callable[[str], None]:
    """Print a line on stdout; with a progress bar on the terminal, above the bar (tqdm.write
    clears the bar, prints the line and redraws the bar), so that the line stays visible."""
    if not progress:
        return lambda line: print(line, flush=True)
    from tqdm.auto import tqdm  # the class of the training loop's bar

    def write(line: str) -> None:
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
    return write


def _epoch_printer(total: int, say: Callable[[str], None]) -> Callable[[Any], None]:
    def show(m) -> None:
        skipped = f"  skipped {m.skipped_steps} steps" if m.skipped_steps else ""
        say(f"epoch {m.epoch:>{len(str(total))}}/{total}  train ELBO {m.train_elbo:.4f}  KL {m.train_kl:.4f}  "
            f"val ELBO {m.val_elbo:.4f}  ({m.seconds:.2f} s){skipped}")
    return show


def _resume_point(layout: RunLayout, epochs: int) -> str:
    """Where ``--resume`` continues, read from the checkpoint's JSON (the checkpoint itself is checked
    when training loads it; a line that cannot be made is left out rather than failing here)."""
    from vaekit.store.documents import read_json

    path = layout.checkpoint.with_suffix(".json")
    if not path.is_file():
        return f"resuming {layout.root}: no checkpoint yet, starting at epoch 1 of {epochs}"
    try:
        doc = read_json(path, ConfigError)
        epoch, step, extra = int(doc["epoch"]), int(doc["step"]), doc.get("extra") or {}
        partial = extra.get("partial_epoch")
        if extra.get("stopped_early") is True or (epoch >= epochs and not partial):
            how = "stopped early" if extra.get("stopped_early") is True else "finished"
            return (f"resuming {layout.root}: training {how} at epoch {epoch}, step {step}; evaluating the best "
                    "weights again")
        if isinstance(partial, dict):
            return (f"resuming {layout.root} at epoch {int(partial['epoch'])} of {epochs}, step {step} (mid-epoch, "
                    f"after {int(partial['batches'])} of its steps)")
        return f"resuming {layout.root} at epoch {epoch + 1} of {epochs}, step {step}"
    except (VaekitError, KeyError, TypeError, ValueError, AttributeError):
        return f"resuming {layout.root}"


def _cmd_train(args: argparse.Namespace) -> int:
    from vaekit.training import distributed, interrupts

    interrupts.forget_received()
    interrupts.watch_parent()                         # torchrun: stop if the agent dies
    with contextlib.ExitStack() as hold:              # the run's lock and the signal handlers, kept to the end:
        try:                                          # a repeated stop signal cannot cut the exit short
            code = _train(args, hold)
        except BaseException as exc:
            distributed.shutdown(wait=False)
            if isinstance(exc, distributed.RankDisagreement) and exc.rank != 0:
                return 2                              # rank 0 says it, in one line
            signum = train_stops.stop_signal(exc)
            if signum is not None:
                if distributed.env_rank() == 0:
                    train_stops.report_stop(args, signum)
                return 128 + signum
            lost = train_stops.lost_peers(exc, args)
            if lost is None:
                raise
            print(f"vaekit train: error: {lost}", file=sys.stderr)
            return 1
        distributed.shutdown()
        return code


def train_with(args: argparse.Namespace, hold: contextlib.ExitStack) -> int:
    """Run ``vaekit train`` on parsed ``args`` in this process, its run lock and signal handlers held by
    ``hold`` (``vaekit tune`` runs each trial so); ``args.epoch_callbacks``, when set, are called with every
    epoch's metrics besides the command's own (a truthy return stops training, as in :func:`vaekit.training.fit`)."""
    return _train(args, hold)


def _train(args: argparse.Namespace, hold: contextlib.ExitStack) -> int:
    import torch

    from vaekit.cli import mlflow_tracking
    from vaekit.cli.train_resume import config_file_values, merge_for_resume
    from vaekit.data import Preprocessing, fit_preprocessing
    from vaekit.models.likelihoods import build_likelihood
    from vaekit.models.vae import build_vae
    from vaekit.store.model_files import save_model
    from vaekit.store.runs import load_test_data
    from vaekit.training import distributed, fit
    from vaekit.training.interrupts import stop_signals_raise

    values, explicit = options.resolve(args, config_file_values)
    mlflow_tracking.require(values, check=distributed.env_rank() == 0)  # --mlflow: the package and the location,
    #                                                   checked by its writer before anything is written
    if args.auto_resume:
        if values["out"] is None:
            raise ConfigError("--auto-resume: needs --out RUN_DIR")
        args.resume = RunLayout.of(values["out"]).config.is_file()
    if args.resume:
        if values["out"] is None:
            raise ConfigError("--resume: needs --out RUN_DIR, the run to continue")
        layout = RunLayout.of(values["out"])
        train_checks.refuse_locked(layout)
        if not layout.config.is_file():
            raise ConfigError(f"--resume: {layout.root} holds no run to resume (no {layout.config.name})")
        values, model_config, extra = merge_for_resume(layout.root, values, explicit)
        options.refuse_untrusted(model_config.arch, args.trust_code)
        data_spec = options.data_spec(values)
        preprocessing = Preprocessing.from_dict(extra["preprocessing"])
    else:
        layout = RunLayout.of(values["out"] if values["out"] is not None else _default_out(values["data"]))
        train_checks.refuse_locked(layout)
        train_checks.refuse_existing(layout)
        options.refuse_untrusted(values["arch"], args.trust_code)
        probe = options.model_config(values, explicit, (1, 1, 1),   # option errors before the data load (any
                                     2 if values["conditional"] else 0)   # arch takes 1×1×1; any C > 0)
        train_checks.check_free_bits(probe, values)
        train_checks.check_objective_model(probe, values)
        train_checks.check_memory(probe, values, probe=True)   # sizes that fit no data: now
        label_options.check_label_options(values)
        options.check_test_data(values, explicit)
        data_spec = options.data_spec(values)
    run_dir = args.run_dir = layout.root
    args.dist_timeout_s = values["dist_timeout"]
    values["device"] = distributed.init_from_env(options.train_device(values["device"]),  # torchrun: join the group
                                                 timeout_s=values["dist_timeout"])
    distributed.check_agreement(train_checks.rank_values(values), values["device"])   # torchrun: the same options
    hold.enter_context(stop_signals_raise())          # SIGTERM and SIGHUP stop the command as Ctrl-C does
    main = distributed.is_main()
    train_config = options.train_config(values)
    progress = not values["no_progress"] and sys.stderr.isatty() and main
    bars = progress_for(not values["no_progress"] and main)   # tqdm on a terminal, else a plain line every 20 s

    try:
        dataset = data_spec.load(download=values["download"], progress=progress)
    except ConfigError as exc:                        # e.g. "label_column: ..." is about --label-column
        raise options.option_error(exc) from None
    if not args.resume:
        classes = label_options.data_classes(dataset, data_spec.spec) if values["conditional"] else (0, ())
        model_config = options.model_config(values, explicit, tuple(dataset.shape), *classes)
        data_kind = build_likelihood(model_config.likelihood, model_config.data_shape).data_kind
        try:
            preprocessing = fit_preprocessing(dataset, data_kind, standardize=values["standardize"])
        except ConfigError as exc:                    # e.g. "likelihood: ..." is about --likelihood
            raise options.option_error(exc) from None
        if data_kind == "discrete":                   # a discretized likelihood's bins: the images' levels
            model_config = _levels_config(model_config, values["likelihood_args"], preprocessing.levels)
    elif tuple(dataset.shape) != tuple(model_config.data_shape):
        raise ConfigError(f"--data {data_spec.spec}: examples of shape {tuple(dataset.shape)} do not match the "
                          f"run's model {tuple(model_config.data_shape)}")
    test = load_test_data(data_spec, preprocessing, tuple(model_config.data_shape), download=values["download"],
                          classes=model_config.class_names)
    if test is not None:                              # --test-data: its every example is the test split
        label_options.checked_labels(test[1], model_config.num_classes, f"--test-data {data_spec.test_data}")
        dataset = dataclasses.replace(dataset, test=test[0], test_labels=test[1])
    train_y, val_y = label_options.training_labels(dataset, model_config.num_classes, data_spec.spec)
    train_x = dataset.train if data_spec.stream else preprocessing.prepare(dataset.train)
    val_x = preprocessing.prepare(dataset.val)
    if val_x.shape[0] == 0:
        raise ConfigError("--val-fraction: the validation split is empty; validation needs at least one example")
    train_checks.check_memory(model_config, values, trust_code=args.trust_code)   # before the model is built
    torch.manual_seed(train_config.seed)
    try:
        model = build_vae(model_config, trust_code=args.trust_code)
    except ConfigError as exc:                        # e.g. the user's module fails to import
        raise options.option_error(exc) from None
    if values["init"] == "ppca" and not args.resume:     # the closed-form optimum of the linear family
        _init_ppca(model, train_x)
    extra = {"preprocessing": preprocessing.to_dict(), "data": data_spec.to_dict(), "train": train_config.to_dict()}
    if main:                                          # the run's one writer from its first write to the end
        hold.enter_context(run_lock(run_dir, option="--out "))
        if not args.resume:
            train_checks.refuse_existing(layout)    # again, under the lock: no other process creates it now
    distributed.barrier()                             # every rank has checked --out before rank 0 writes there
    if not args.resume and main:
        save_model(model, run_dir, extra=extra)       # config.json first: the run can be resumed from now on

    say = _say(progress)
    if main:
        train_checks.warn_long_warmup(values)
        if args.resume:
            say(_resume_point(layout, train_config.epochs))
    callbacks = [_epoch_printer(train_config.epochs, say)] if main else []
    tracker = mlflow_tracking.start_for_train(values, layout, args.resume, hold, extra) if main else None
    if tracker is not None:                           # --mlflow: params now, metrics every epoch, files at the end
        callbacks.append(tracker.log_epoch)
    callbacks += list(getattr(args, "epoch_callbacks", ()))   # vaekit tune: report each epoch to its trial
    result = fit(model, train_x, val_x, train_config, preprocessing=preprocessing, run_dir=run_dir,
                 resume=args.resume, progress=bars, callbacks=callbacks, model_extra=extra,
                 tensorboard_images=values["tensorboard_images"], tensorboard_steps=values["tensorboard_steps"],
                 train_y=train_y, val_y=val_y)
    distributed.shutdown()                            # leave the group: the end's work is rank 0's alone
    if not main:
        return 0                                      # rank 0 evaluates and writes the figures
    summary = [f"run directory: {run_dir}"]
    summary += _finish(args, values, layout, result, dataset, data_spec, preprocessing, train_config, bars, say)
    if tracker is not None:
        tracker.finish()
    for line in summary:
        print(line)
    return 0


def _init_ppca(model: LatentModel, train_x: Any) -> None:
    """--init ppca: the model set to the pPCA fit of the prepared training split (:mod:`vaekit.models.ppca_init`)."""
    import torch

    from vaekit.models.ppca_init import init_ppca

    if not isinstance(train_x, torch.Tensor):
        raise ConfigError("--init ppca: needs the training split in memory, not --stream")
    try:
        init_ppca(model, train_x)
    except ConfigError as exc:
        raise ConfigError(f"--{exc}") from None


def _levels_config(config: Any, given: dict[str, Any] | None, levels: int | None) -> Any:
    """``config`` with ``likelihood_args`` bins = the data's ``levels`` (a ConfigError naming --likelihood-args
    when the bins given differ)."""
    from vaekit.models.config import VAEConfig
    from vaekit.models.likelihoods import likelihood_args_for_levels

    try:
        args = likelihood_args_for_levels(config.likelihood, given, levels)
        return VAEConfig.from_dict({**config.to_dict(), "likelihood_args": args})
    except ConfigError as exc:
        raise options.option_error(exc) from None


def _record_run(args: argparse.Namespace, layout: RunLayout, dataset: Any, train_config: Any) -> None:
    """Append this command to the run's run.json (:mod:`vaekit.store.run_info`) with the split sizes and the
    precision training used (what ``--precision auto`` chose on this device)."""
    from vaekit.devices import resolve_device
    from vaekit.store.run_info import new_session, record_session
    from vaekit.training.config import resolve_precision

    sizes = {"train": len(dataset.train), "val": len(dataset.val)}
    if dataset.test is not None:
        sizes["test"] = len(dataset.test)
    argv = getattr(args, "argv", ["vaekit", *sys.argv[1:]])           # set by vaekit.cli.main
    session = new_session(argv, started=getattr(args, "started", time.time()), resumed=args.resume)
    session["precision_used"] = resolve_precision(train_config.precision, resolve_device(train_config.device))
    record_session(layout, session, sizes)


def _objective_line(config: Any) -> str:
    """What was trained, and whether it bounds log p(x) (the ELBO and log p(x) are reported either way)."""
    bound = config.build_objective().bounds_log_likelihood(config.beta)
    what = "a lower bound on log p(x)" if bound else "not a lower bound on log p(x)"
    return (f"objective: {config.objective} (gradient {config.gradient}), {what}; the ELBO and log p(x) reported "
            "are the model's own")


def _finish(args: argparse.Namespace, values: dict[str, Any], layout: RunLayout, result: Any, dataset: Any,
            data_spec: Any, preprocessing: Any, train_config: Any, progress: bool | Callable[..., Any],
            say: Callable[[str], None]) -> list[str]:
    """Rank 0 after training: evaluate the best weights on the test split (the validation split when
    there is no test split), write the evaluation, the figures and the report, each phase announced
    with ``say`` and timed; the summary lines."""
    import torch

    from vaekit.store.atomic import atomic_write_json
    from vaekit.store.runs import eval_tensor, load_run

    run = load_run(layout.root, map_location=train_config.device, trust_code=args.trust_code)
    run.model.eval()
    stopped = ", stopped early" if result.stopped_early else ""
    # one unit on the summary: the data as given (the training metrics' standardised ELBO + the log-Jacobian)
    units = " of the data as given (columns unstandardised)" if preprocessing.standardized else ""
    best_val = result.best_val_elbo + preprocessing.log_jacobian
    summary = [f"best validation ELBO: {best_val:.4f} nats{units} (epoch {result.best_epoch} of "
               f"{len(result.history)}{stopped})", _objective_line(train_config)]
    split, x_raw, labels = "test", dataset.test, dataset.test_labels
    if x_raw is None or len(x_raw) < 2:
        split, x_raw, labels = "val", dataset.val, dataset.val_labels
    if len(x_raw) < 2:
        _record_run(args, layout, dataset, train_config)
        return summary
    from vaekit.inference.evaluate import evaluate

    say(f"evaluating the best weights (epoch {result.best_epoch}) on the {split} split ({len(x_raw)} examples, "
        f"K = {values['importance_samples']})...")
    started = time.perf_counter()
    x = eval_tensor(preprocessing, x_raw, seed=EVAL_DATA_SEED, device=train_config.device)
    torch.manual_seed(train_config.seed)
    evaluation = evaluate(run.model, x, importance_samples=values["importance_samples"],
                          levels=preprocessing.levels if preprocessing.dequantize else None, progress=progress,
                          log_jacobian=preprocessing.log_jacobian,      # in the units of the data as given
                          y=labels if run.model.num_classes else None)  # a conditional model: of x given y
    doc = {"run_dir": str(layout.root), "split": split, "data": data_spec.to_dict(), "limit": None,
           "seed": train_config.seed, **evaluation.to_dict()}
    atomic_write_json(layout.evaluation(split), doc)
    say(f"  evaluated in {time.perf_counter() - started:.1f} s")
    _record_run(args, layout, dataset, train_config)   # run.json: the command, duration, versions, splits, precision
    summary.append(f"{split} ELBO: {evaluation.elbo:.4f} nats   log p(x) (K = {evaluation.importance_samples}): "
                   f"{evaluation.log_likelihood:.4f} ± {evaluation.log_likelihood_se:.4f} nats")
    if evaluation.bits_per_dim is not None:
        summary.append(f"{split} bits per dim: {evaluation.bits_per_dim:.4f}")
    from vaekit.cli.evaluate_cmd import warn_unreliable

    warn_unreliable(evaluation)                       # PSIS k̂ > 0.7: the log p(x) above is unreliable
    summary.append(f"active units: {evaluation.active_units} of {evaluation.latent_dim}")
    if not values["no_figures"]:
        from vaekit.cli.run_access import scatter_examples
        from vaekit.viz.figures import write_figures, write_run_report

        say("writing the figures and report.html...")
        started = time.perf_counter()
        with heartbeat("figures", progress):
            scatter = scatter_examples(dataset.train, dataset.train_labels, preprocessing, train_config.device)
            figures = write_figures(layout.root, model=run.model, x=x, labels=labels,
                                    history=[m.to_dict() for m in result.history], seed=train_config.seed,
                                    scatter=scatter,             # the latent scatter: up to 5000 training examples
                                    columns=data_spec.column_names())    # a CSV's header names the heatmaps' columns
            report = write_run_report(layout.root, figures)   # the report reads the rest from the run directory
        say(f"  wrote {len(figures)} figures and the report in {time.perf_counter() - started:.1f} s")
        summary.append(f"report: {report}")
    return summary
