"""``vaekit tune``: a hyperparameter search over ``vaekit train``'s options with Optuna (``pip install
'vaekit[tune]'``), each trial a normal run directory DIR/trial-NNNN.

The search space is a JSON or YAML file over the train options (:mod:`vaekit.cli.tune_space`); the
options given on the command line (or in ``--config``) are the same for every trial. A trial's
objective, maximised, is its best validation ELBO per epoch (``--metric elbo``), or its best
validation log p(x) (``--metric log-likelihood``, estimated each epoch with ``--val-importance-samples
K``). Every epoch's value is reported to the trial from the training loop (an epoch callback of
:func:`vaekit.training.fit`), and the pruner (``--pruner median``: Optuna's MedianPruner) stops a trial
whose value at an epoch is below the median of the earlier trials' at the same epoch; the pruned
trial's run directory holds the epochs it trained, evaluated like any run that stopped early.

The study lives in Optuna's RDB storage (``--storage``, by default an SQLite file DIR/study.db), so
that running the same command again continues the search until the study holds ``--trials`` trials
complete, pruned or running in another process, and several processes, on one machine or on machines that share the
database URL, work on one study. A trial stopped by Ctrl-C, SIGTERM or SIGHUP saves its checkpoint
(as ``vaekit train`` does) and is queued again with the same parameters; a trial whose process was
killed outright (SIGKILL, a lost machine) is found when the study is next opened, on the same
machine by its process id and elsewhere by Optuna's heartbeat (no beat for ``--grace`` seconds), and
queued again the same way. A queued trial continues the run directory of the one it replaces from
its checkpoint.

``vaekit report DIR/trial-0003 DIR/trial-0001 ...`` compares the best trials; the command prints that
line for the best three.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from vaekit.cli import help_text
from vaekit.cli.train_cmd import add_option_groups
from vaekit.errors import ConfigError, VaekitError

__all__ = ["register"]

#: Trials in a row that may fail (an error in training) before the command stops.
MAX_FAILURES_IN_A_ROW = 3


def register(subparsers: Any) -> None:
    """Add ``vaekit tune`` to ``subparsers``."""
    p = subparsers.add_parser(
        "tune", help="search train options with Optuna, a run per trial",
        description=help_text.description((__doc__ or "").split("\n\n", 1)[1]) + "\n\nexample:\n"
        "  echo '{\"lr\": {\"type\": \"float\", \"low\": 1e-4, \"high\": 1e-2, \"log\": true}, "
        "\"latent_dim\": [2, 4, 8]}' > space.json\n"
        "  vaekit tune --space space.json --trials 20 --storage sqlite:///study.db --study digits \\\n"
        "      --out runs/tune --data digits --epochs 30\n"
        "  vaekit report runs/tune/trial-0007 runs/tune/trial-0002 --out best.html",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    t = p.add_argument_group("search")
    t.add_argument("--space", metavar="FILE", type=Path, required=True,
                   help="JSON or YAML file: train option names (with underscores) -> ranges")
    t.add_argument("--trials", metavar="N", type=_positive, required=True,
                   help="finished trials (complete or pruned) the study should hold; the command runs trials "
                        "until it does")
    t.add_argument("--out", metavar="DIR", type=Path, required=True, help="where the trials' run directories go "
                   "(DIR/trial-NNNN)")
    t.add_argument("--storage", metavar="URL", default=None,
                   help="Optuna RDB storage URL, e.g. sqlite:///study.db (default: sqlite:///DIR/study.db)")
    t.add_argument("--study", metavar="NAME", default="vaekit", help="study name in the storage (default: vaekit)")
    t.add_argument("--metric", choices=("elbo", "log-likelihood"), default="elbo",
                   help="what to maximise: the validation ELBO, or the validation log p(x) (needs "
                        "--val-importance-samples K); default elbo")
    t.add_argument("--pruner", choices=("median", "none"), default="median",
                   help="stop trials below the median of earlier trials at the same epoch (default median)")
    t.add_argument("--startup-trials", metavar="N", type=_positive, default=3,
                   help="finished trials before pruning starts (default 3)")
    t.add_argument("--sampler-seed", metavar="S", type=int, default=None,
                   help="seed of Optuna's TPE sampler (default: unseeded; processes sharing a study should differ)")
    t.add_argument("--grace", metavar="SECONDS", type=_positive, default=300,
                   help="a trial of another machine whose heartbeat stopped this long ago is queued again "
                        "(default 300)")
    t.add_argument("--json", action="store_true", help="print the study's trials as JSON on stdout (the trials' "
                   "own output goes to stderr)")
    groups = add_option_groups(p, skip=("out",))
    groups["model"].add_argument("--trust-code", action="store_true",
                                 help="allow --arch MODULE:FUNCTION to import and run that code")
    groups["run"].add_argument("--config", metavar="FILE", type=Path, default=None,
                               help="JSON or YAML file of train option values shared by every trial")
    p.set_defaults(func=_cmd_tune)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("needs Optuna; install it with pip install 'vaekit[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)   # a failed trial: our one line, not Optuna's traceback
    return optuna


# --------------------------------------------------------------------------- the command

def _cmd_tune(args: argparse.Namespace) -> int:
    from vaekit.cli import train_options as options
    from vaekit.cli import tune_study
    from vaekit.cli.tune_space import load_space
    from vaekit.training.interrupts import forget_received, stop_signals_raise

    params = load_space(args.space)                   # the space and the options first: nothing written yet
    base, explicit = options.resolve(args)
    clash = sorted(set(explicit) & {p.name for p in params})
    if clash:
        raise ConfigError(f"--space {args.space}: {clash[0]} is both searched and given as {options.flag(clash[0])}")
    if args.metric == "log-likelihood" and not base["val_importance_samples"]:
        raise ConfigError("--metric log-likelihood: needs --val-importance-samples K > 0 (the per-epoch estimate)")
    optuna = _import_optuna()
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out}: is a file, not a directory")
    args.out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{args.out.resolve() / 'study.db'}"
    forget_received()
    with stop_signals_raise():                        # SIGTERM, SIGHUP: the trial checkpoints and is queued again
        study = tune_study.open_study(optuna, storage, args)
        requeued = tune_study.requeue_dead(optuna, study, socket.gethostname())
        for number in requeued:
            _note(args, f"trial {number} was left running by a process that is gone: queued again")
        out = sys.stderr if args.json else sys.stdout
        failures = 0
        while tune_study.finished(optuna, study) < args.trials:
            error = _one_trial(optuna, study, args, params, out)
            failures = failures + 1 if error is not None else 0
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise ConfigError(f"{failures} trials in a row failed; the last: {error}")
    _summary(optuna, study, args)
    return 0


def _note(args: argparse.Namespace, line: str) -> None:
    print(line, file=sys.stderr if args.json else sys.stdout, flush=True)


def _one_trial(optuna: Any, study: Any, args: argparse.Namespace, params: Any, out: Any) -> str | None:
    """Run one trial of ``study``; the error of a failed trial (None otherwise)."""
    from vaekit.cli import tune_study

    objective = tune_study.Objective(optuna, study, args, params)
    with contextlib.redirect_stdout(out):
        study.optimize(objective, n_trials=1, catch=(VaekitError,))
    if objective.number is not None:
        line = tune_study.describe(optuna, study.trials[objective.number], args.metric)
        _note(args, line + (f"\n  error: {objective.error}" if objective.error else ""))
    return objective.error


def _summary(optuna: Any, study: Any, args: argparse.Namespace) -> None:
    import json

    from vaekit.cli import tune_study

    best = tune_study.ranked(optuna, study)
    if args.json:
        print(json.dumps({"study": args.study, "metric": args.metric, "trials": tune_study.rows(optuna, study),
                          "best": [t.number for t in best]}, indent=2))
        return
    if not best:
        print(f"study {args.study}: no complete trial")
        return
    top = best[0]
    print(f"best trial {top.number}: {args.metric} {top.value:.4f}  {tune_study.show_params(top.params)}  "
          f"run {top.user_attrs.get('run_dir')}")
    dirs = " ".join(shlex.quote(str(t.user_attrs.get("run_dir"))) for t in best[:3])
    print(f"compare the best: vaekit report {dirs} --out {shlex.quote(str(args.out / 'best.html'))}")

