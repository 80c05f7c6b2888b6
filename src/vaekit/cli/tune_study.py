"""The Optuna side of ``vaekit tune`` (:mod:`vaekit.cli.tune_cmd`): the study in its RDB storage, the
objective that trains one run per trial and reports every epoch to it, and the queueing again of
trials that were stopped or whose process died. Optuna is passed in as a module (it is an optional
extra, imported by the command)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from vaekit.cli import train_options as options
from vaekit.cli.tune_space import Param, suggest
from vaekit.errors import ConfigError, VaekitError

__all__ = ["open_study", "requeue", "requeue_dead", "finished", "Objective", "describe", "ranked", "rows",
           "show_params", "pid_alive"]

HEARTBEAT_S = 30
METRIC_KEYS = {"elbo": "val_elbo", "log-likelihood": "val_log_likelihood"}


def open_study(optuna: Any, url: str, args: argparse.Namespace) -> Any:
    """The study ``args.study`` in the storage at ``url`` (created when new; maximised), with the pruner
    and sampler the options name, and a heartbeat: a trial whose process stopped beating for
    ``args.grace`` seconds is failed and queued again (:func:`requeue`) when a process opens a trial."""
    storage = _storage(optuna, url, args.grace)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials) if args.pruner == "median"
              else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=args.study, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=args.sampler_seed), pruner=pruner)
    stored = study.user_attrs.get("metric")
    if stored is None:
        study.set_user_attr("metric", args.metric)
    elif stored != args.metric:
        raise ConfigError(f"--metric {args.metric}: study {args.study} in {url} maximises {stored}")
    return study


def _storage(optuna: Any, url: str, grace: int) -> Any:
    """Optuna's RDB storage at ``url``. Processes that open a new database at the same moment race to create
    its tables (the loser sees an integrity error): an attempt that fails is repeated twice, by which time
    the tables exist. SQLite waits up to a minute for another process's write lock."""
    import sqlalchemy.exc  # Optuna's own dependency

    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(3):
        try:
            with warnings.catch_warnings():           # the heartbeat is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=grace, heartbeat_stale_trial_callback=requeue)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy's URL and connection errors, one line
            error = exc
            if not isinstance(exc, sqlalchemy.exc.DBAPIError):   # a bad URL: no use trying again
                break
            time.sleep(1.0 + attempt)
    raise ConfigError(f"--storage {url}: cannot open ({type(error).__name__}: {' '.join(str(error).split())})")


def requeue(study: Any, trial: Any) -> None:
    """Queue ``trial`` (a FrozenTrial that was stopped or whose process died) again with its parameters;
    the new trial continues its run directory from the checkpoint."""
    run_dir = trial.user_attrs.get("run_dir")
    attrs = {"retry_of": trial.number, **({"resume_dir": run_dir} if run_dir else {})}
    study.enqueue_trial(trial.params, user_attrs=attrs)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def requeue_dead(optuna: Any, study: Any, host: str) -> list[int]:
    """Fail and queue again the running trials of this machine (``host``) whose process is gone
    (killed outright: SIGKILL, out of memory); their numbers."""
    found = []
    running = optuna.trial.TrialState.RUNNING
    for trial in study.get_trials(deepcopy=False, states=(running,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or not isinstance(pid, int) or pid_alive(pid):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue                                  # another process got there first
        requeue(study, trial)
        found.append(trial.number)
    return found


def finished(optuna: Any, study: Any) -> int:
    """Trials that count towards ``--trials``: complete, pruned, or running (in another process)."""
    state = optuna.trial.TrialState
    return len(study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED, state.RUNNING)))


class Objective:
    """One trial: draw the parameters, train DIR/trial-NNNN (or continue the run directory of the trial
    it replaces) with every epoch's validation metric reported to the trial, and return the best."""

    def __init__(self, optuna: Any, study: Any, args: argparse.Namespace, params: tuple[Param, ...]) -> None:
        self.optuna, self.study, self.args, self.params = optuna, study, args, params
        self.number: int | None = None
        self.error: str | None = None
        self.pruned_at: int | None = None

    def __call__(self, trial: Any) -> float:
        from vaekit.cli.train_cmd import train_with
        from vaekit.store.layout import RunLayout
        from vaekit.store.metrics import read_history

        self.number = trial.number
        resume_dir = trial.user_attrs.get("resume_dir")
        run_dir = Path(resume_dir) if resume_dir else self.args.out / f"trial-{trial.number:04d}"
        for key, value in {"host": socket.gethostname(), "pid": os.getpid(), "run_dir": str(run_dir)}.items():
            trial.set_user_attr(key, value)
        searched = suggest(trial, self.params)
        key = METRIC_KEYS[self.args.metric]
        for row in read_history(RunLayout.of(run_dir)):   # a continued run: its epochs so far
            if self._report(trial, row.get(key), int(row["epoch"])):
                break
        train_args = self._train_args(searched, run_dir)
        train_args.epoch_callbacks = [lambda m: self._report(trial, getattr(m, key), m.epoch)]
        try:
            if self.pruned_at is None:
                with contextlib.ExitStack() as hold:
                    train_with(train_args, hold)
        except KeyboardInterrupt:                     # stopped: the checkpoint is saved, the trial queued again
            requeue(self.study, self.study._storage.get_trial(trial._trial_id))
            raise
        except VaekitError as exc:
            self.error = str(exc)
            raise
        if self.pruned_at is not None:
            raise self.optuna.TrialPruned(f"pruned at epoch {self.pruned_at}")
        return self._best(read_history(RunLayout.of(run_dir)), key, run_dir)

    def _report(self, trial: Any, value: Any, epoch: int) -> bool:
        """Report one epoch's value; whether the pruner stops the trial."""
        if value is None or not math.isfinite(float(value)):
            return False
        trial.report(float(value), epoch)
        if trial.should_prune():
            self.pruned_at = epoch
            return True
        return False

    def _best(self, history: list[dict[str, Any]], key: str, run_dir: Path) -> float:
        values = [float(row[key]) for row in history if row.get(key) is not None and math.isfinite(float(row[key]))]
        if not values:
            self.error = f"{run_dir}: no finite {key} in its metrics"
            raise ConfigError(self.error)
        return max(values)

    def _train_args(self, searched: dict[str, Any], run_dir: Path) -> argparse.Namespace:
        """The namespace ``vaekit train`` would parse for this trial (``--auto-resume``: a replaced trial's
        run continues), with ``argv`` the equivalent train command, which run.json records."""
        ns = argparse.Namespace(**{o.name: getattr(self.args, o.name, None) for o in options.OPTIONS})
        for name, value in searched.items():
            setattr(ns, name, value)
        ns.out, ns.config, ns.trust_code = str(run_dir), self.args.config, self.args.trust_code
        ns.resume, ns.auto_resume, ns.started = False, True, getattr(self.args, "started", None)
        argv = ["vaekit", "train"] + (["--config", str(self.args.config)] if self.args.config else [])
        for opt in options.OPTIONS:
            value = getattr(ns, opt.name)
            if value is None or value is False or opt.name == "out":
                continue
            argv += [options.flag(opt.name)] + ([] if opt.parse is None else [options.show(value)])
        ns.argv = argv + ["--out", str(run_dir)] + (["--trust-code"] if self.args.trust_code else [])
        if ns.started is None:
            ns.started = time.time()
        return ns


def show_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def describe(optuna: Any, trial: Any, metric: str) -> str:
    """One line on a finished trial."""
    state = optuna.trial.TrialState
    where = f"run {trial.user_attrs.get('run_dir')}"
    if trial.state == state.COMPLETE:
        return f"trial {trial.number}: {metric} {trial.value:.4f}  ({show_params(trial.params)})  {where}"
    if trial.state == state.PRUNED:
        last = max(trial.intermediate_values) if trial.intermediate_values else 0
        return f"trial {trial.number}: pruned after epoch {last}  ({show_params(trial.params)})  {where}"
    what = {"FAIL": "failed"}.get(trial.state.name, trial.state.name.lower())
    return f"trial {trial.number}: {what}  ({show_params(trial.params)})  {where}"


def ranked(optuna: Any, study: Any) -> list[Any]:
    """The complete trials, best first."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(complete, key=lambda t: -t.value)


def rows(optuna: Any, study: Any) -> list[dict[str, Any]]:
    """Every trial as a JSON-ready row."""
    return [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
             "run_dir": t.user_attrs.get("run_dir"), "retry_of": t.user_attrs.get("retry_of"),
             "epochs_reported": len(t.intermediate_values)} for t in study.trials]
