"""``vaekit train --mlflow LOCATION``: the training run as an MLflow run (optional extra ``mlflow``:
``pip install 'vaekit[mlflow]'``, which brings mlflow-skinny with SQLAlchemy and Alembic for a local store).

LOCATION is a directory or a tracking URI. A directory is a local store, read and written offline:
the tracking database ``DIR/mlflow.db`` (the URI ``sqlite:///DIR/mlflow.db``, MLflow's own local
backend; its older file store is in maintenance mode and refused by default) and the artefacts under
``DIR/artifacts/``. Browse it with ``mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db`` (the full
``mlflow`` package). A value with a scheme (``sqlite:///x.db``, ``http://host:5000``, ...) is used as
the tracking URI as it is (a ``sqlite:///`` database keeps the artefacts of a new experiment in
``artifacts/`` beside the database file, not in MLflow's default ``./mlruns``). The run goes into the
experiment ``--mlflow-experiment`` (default vaekit).

What is logged:

* params, from RUN_DIR/config.json and the command's options (:func:`run_params`): ``model.*`` (the
  model configuration), ``train.*`` (the training options), ``data.*`` (the data spec) and
  ``preprocessing.kind``, ``.levels``, ``.binarize``, ``.dequantize``, ``.standardized``; strings as
  they are, other values as JSON text;
* metrics, once per epoch (step = the epoch): every numeric field of that epoch's metrics.jsonl row
  (train_elbo, val_elbo, train_kl, ..., lr, seconds); non-finite values are left out;
* at the end: the numbers of each evaluation-SPLIT.json as ``SPLIT/KEY`` (``test/elbo``,
  ``test/log_likelihood``, ...), and as artefacts the figures (``figures/*.png``), report.html,
  config.json, metrics.jsonl and .csv, the evaluation files and run.json;
* tags ``vaekit.run_dir`` and the run name (the run directory's name); the status FINISHED, FAILED
  after an error or KILLED after a stop signal.

The location is checked before anything is written (:func:`check_location`): a directory must be
creatable (no file in its place), a ``sqlite:///`` database must lie in a directory that exists
(vaekit creates no directory the URI does not name), the scheme must be one MLflow knows, and a
server (``http://``, ``https://``, a database host) must accept a connection within
:data:`CONNECT_TIMEOUT_S` seconds; each failure is one line and exit code 2. MLflow's own HTTP calls are
bounded the same way (``MLFLOW_HTTP_REQUEST_TIMEOUT`` 5 s, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 1, when
not set otherwise), so a server that goes away costs seconds, not minutes. Once training has started,
a tracker that fails (the server gone, the disk of the store full) is one warning on stderr, and the
run goes on untracked: the tracker never costs the run.

RUN_DIR/mlflow.json records the tracking URI and the run id, so that ``--resume`` with the same
LOCATION continues the same MLflow run (params that may change on resume, such as ``train.epochs``,
keep their first value; the new one is the tag ``vaekit.resumed.KEY``). Resuming a run that was not
tracked starts an MLflow run at the resumed epoch. MLflow's usage telemetry is switched off
(``MLFLOW_DISABLE_TELEMETRY=true`` unless set otherwise): vaekit sends nothing anywhere.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vaekit.errors import ConfigError, DataError
from vaekit.store.atomic import atomic_write_json
from vaekit.store.documents import read_json
from vaekit.store.layout import RunLayout

__all__ = ["MlflowRun", "tracking_uri", "run_params", "require", "check_location", "start_for_train", "EXPERIMENT",
           "CONNECT_TIMEOUT_S"]

EXPERIMENT = "vaekit"
#: Seconds a connection to a tracking server (or a database host) may take before the command gives up.
CONNECT_TIMEOUT_S = 5.0
#: MLflow's HTTP settings while vaekit runs, unless the environment sets them: a call gives up after about
#: 2 × 5 s instead of MLflow's default of minutes of retries.
_HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.5", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
#: Schemes that name a server, and the port each listens on when the URI names none.
_SERVER_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}
_NOT_METRICS = ("epoch", "step")
_ARTIFACT_FILES = ("config.json", "metrics.jsonl", "metrics.csv", "run.json", "report.html")


def tracking_uri(location: str) -> tuple[str, str | None]:
    """(tracking URI, artefact location or None) for ``--mlflow LOCATION`` (module docstring)."""
    if "://" in location:
        path = _sqlite_path(location)
        if path:                                      # artefacts beside the database, not in ./mlruns
            return location, (Path(path).expanduser().resolve().parent / "artifacts").as_uri()
        return location, None
    root = Path(location).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--mlflow {location}: is a file; give a directory (a local MLflow store) or a tracking URI")
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_directory(location: str) -> None:
    """``--mlflow DIR``: DIR is a directory, or can be made (its nearest existing ancestor is a writable
    directory)."""
    root = Path(location).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--mlflow {location}: is a file; give a directory (a local MLflow store) or a tracking URI")
    ancestor = _nearest_existing(root.absolute())
    if not ancestor.is_dir():
        raise ConfigError(f"--mlflow {location}: cannot be created, {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"--mlflow {location}: cannot be written ({ancestor}: permission denied)")


def _known_schemes() -> tuple[str, ...]:
    """The tracking-URI schemes this MLflow has a store for (``sqlite``, ``http``, ...): its registry's, or
    those of MLflow 3 where the registry (not a public API) is not where it was."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return tuple(sorted(scheme for scheme in _tracking_store_registry._registry if scheme))
    except (ImportError, AttributeError):
        return ("databricks", "file", "http", "https", "mssql", "mysql", "postgresql", "sqlite")


def _check_sqlite(location: str, path: str) -> None:
    """A ``sqlite:///PATH`` store: PATH's directory exists (MLflow would create it, and its parents)."""
    if path in ("", ":memory:"):
        return
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"--mlflow {location}: {file} is a directory; the URI names the database file")
    if not file.parent.is_dir():
        raise ConfigError(f"--mlflow {location}: the directory {file.parent} does not exist; create it first "
                          "(vaekit creates no directory a URI does not name) or give --mlflow DIR, a local store")


def _sqlite_path(location: str) -> str | None:
    """The database file of a ``sqlite:///rel.db`` or ``sqlite:////abs.db`` URI; None for another scheme or
    an in-memory database."""
    if urlsplit(location).scheme.lower().split("+")[0] != "sqlite":
        return None
    rest = location.split("://", 1)[1].split("?", 1)[0]
    path = rest[1:] if rest.startswith("/") else rest
    return path if path not in ("", ":memory:") else None


def _check_reachable(location: str, host: str, port: int) -> None:
    """A TCP connection to ``host:port`` within :data:`CONNECT_TIMEOUT_S` seconds, or a ConfigError."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return
    except TimeoutError:
        why = f"no answer within {CONNECT_TIMEOUT_S:g} s"
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
    raise ConfigError(f"--mlflow {location}: cannot connect to {host}:{port} ({why}); is the tracking server "
                      "running there?")


def check_location(location: str) -> None:
    """``--mlflow LOCATION`` checked before anything is written (module docstring); a ConfigError naming it."""
    if "://" not in location:
        _check_directory(location)
        return
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    known = _known_schemes()
    if scheme not in known and scheme.split("+")[0] not in known:
        raise ConfigError(f"--mlflow {location}: unknown tracking URI scheme {scheme!r}; give a directory (a local "
                          f"store) or a URI of a scheme MLflow knows ({', '.join(known)})")
    base = scheme.split("+")[0]
    if base == "sqlite":
        _check_sqlite(location, _sqlite_path(location) or "")
    elif base in _SERVER_PORTS and parts.hostname:
        try:
            port = parts.port or _SERVER_PORTS[base]
        except ValueError as exc:                      # a port that is no number, or out of range
            raise ConfigError(f"--mlflow {location}: {exc}") from None
        _check_reachable(location, parts.hostname, port)


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def run_params(layout: RunLayout, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The MLflow params of a run: its config.json flattened (module docstring), every value a string;
    ``extra`` (preprocessing, data, train) in place of the stored one: a resumed run's current options."""
    from vaekit.store.model_files import read_config
    from vaekit.training.tensorboard import flat_params

    config, stored = read_config(layout.root)
    extra = stored if extra is None else extra
    prep = extra.get("preprocessing") or {}
    params: dict[str, Any] = flat_params(config.to_dict(), "model.")
    params.update(flat_params(extra.get("train") or {}, "train."))
    params.update(flat_params(extra.get("data") or {}, "data."))
    params.update(flat_params({k: prep.get(k) for k in ("kind", "levels", "binarize", "dequantize")}, "preprocessing."))
    params["preprocessing.standardized"] = prep.get("mean") is not None
    return {key: _param_text(value) for key, value in params.items()}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's and SQLAlchemy's deprecation notices are theirs, not the user's: hidden while they run."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        yield


def require(values: dict[str, Any], *, check: bool = False) -> None:
    """With ``--mlflow``: a ConfigError (before anything is written) unless mlflow and, for a local
    store, SQLAlchemy can be imported; with ``check``, the location is checked too (:func:`check_location`)."""
    if values.get("mlflow") is None:
        return
    modules = ("mlflow.tracking",) if "://" in values["mlflow"] else ("mlflow.tracking", "sqlalchemy", "alembic")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")      # vaekit sends nothing anywhere
    for name, value in _HTTP_LIMITS.items():
        os.environ.setdefault(name, value)
    for module in modules:
        try:
            with _quiet():
                importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"--mlflow: needs the {module.split('.')[0]} package; install it with "
                              "pip install 'vaekit[mlflow]' (mlflow-skinny, sqlalchemy, alembic)") from None
    if check:
        check_location(values["mlflow"])


def start_for_train(values: dict[str, Any], layout: RunLayout, resume: bool, hold: contextlib.ExitStack,
                    extra: dict[str, Any]) -> MlflowRun | None:
    """``vaekit train``'s MLflow run (None without ``--mlflow``), with the command's ``extra``
    (preprocessing, data, train), marked FAILED or KILLED by ``hold`` if the command ends with an
    error or a stop signal."""
    if values.get("mlflow") is None:
        return None
    try:
        run = MlflowRun.start(values["mlflow"], layout, experiment=values.get("mlflow_experiment") or EXPERIMENT,
                              resume=resume, extra=extra)
    except Exception as exc:  # noqa: BLE001 - the location was checked; a tracker never costs the run
        _warn(exc, "training goes on without it")
        return None
    hold.push(run.end)
    return run


def _warn(exc: BaseException, what: str) -> None:
    text = " ".join(str(exc).split())[:300]
    print(f"vaekit train: warning: --mlflow: the tracker failed ({type(exc).__name__}: {text}); {what}",
          file=sys.stderr, flush=True)


def _client(uri: str) -> Any:
    """An MlflowClient on ``uri`` (no network: telemetry off), or a ConfigError without mlflow."""
    require({"mlflow": uri})
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):          # the CLI's choice: their start-up notices are not ours to print
        logging.getLogger(name).setLevel(logging.WARNING)
    with _quiet():
        return MlflowClient(tracking_uri=uri)


class MlflowRun:
    """One vaekit run logged as one MLflow run (module docstring)."""

    def __init__(self, client: Any, run_id: str, layout: RunLayout, extra: dict[str, Any] | None = None):
        self.client = client
        self.run_id = run_id
        self.layout = layout
        self.extra = extra
        #: Set when a call failed: the tracker then does nothing (one warning was printed).
        self.failed = False

    def _guarded(self, call: Callable[[], None], what: str) -> None:
        """``call()``; an error in it (the server gone, ...) is one warning, and the tracker stops."""
        if self.failed:
            return
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - a tracker never costs the run
            self.failed = True
            _warn(exc, what)

    @classmethod
    def start(cls, location: str, layout: RunLayout, *, experiment: str = EXPERIMENT, resume: bool = False,
              extra: dict[str, Any] | None = None) -> MlflowRun:
        """Open (or, resuming, reopen) the MLflow run of the run in ``layout`` (its config.json
        written) at ``location``, and log its params (with ``extra``, the command's preprocessing,
        data and training options, in place of config.json's, which a resumed run rewrites only
        with its next best weights)."""
        uri, artifacts = tracking_uri(location)
        client = _client(uri)
        link = cls._link(layout) if resume else None
        with _quiet():
            if link is not None and link.get("tracking_uri") == uri:
                run_id = str(link["run_id"])
                client.update_run(run_id, status="RUNNING")
            else:
                found = client.get_experiment_by_name(experiment)
                exp_id = found.experiment_id if found is not None else client.create_experiment(
                    experiment, artifact_location=artifacts)
                tags = {"vaekit.run_dir": str(layout.root.resolve()), "mlflow.runName": layout.root.resolve().name}
                run_id = client.create_run(exp_id, tags=tags).info.run_id
                atomic_write_json(layout.mlflow_link, {"tracking_uri": uri, "experiment_id": exp_id,
                                                       "run_id": run_id})
        run = cls(client, run_id, layout, extra)
        run.log_params()
        return run

    @staticmethod
    def _link(layout: RunLayout) -> dict[str, Any] | None:
        if not layout.mlflow_link.is_file():
            return None
        doc = read_json(layout.mlflow_link, DataError)
        return doc if isinstance(doc, dict) and "run_id" in doc else None

    def log_params(self) -> None:
        """The run's params; on a reopened run, new keys only (a changed value becomes a tag)."""
        from mlflow.entities import Param, RunTag

        params = run_params(self.layout, self.extra)
        with _quiet():
            logged = self.client.get_run(self.run_id).data.params
            new = [Param(k, v) for k, v in params.items() if k not in logged]
            changed = [RunTag(f"vaekit.resumed.{k}", v) for k, v in params.items() if k in logged and logged[k] != v]
            for start in range(0, len(new), 100):                  # MLflow takes at most 100 params a batch
                self.client.log_batch(self.run_id, params=new[start:start + 100])
            if changed:
                self.client.log_batch(self.run_id, tags=changed)

    def log_epoch(self, metrics: Any) -> None:
        """A ``fit`` callback: the epoch's numbers (an EpochMetrics) at step = epoch; returns None (go on).
        A failure is a warning, and training goes on untracked."""
        self._guarded(lambda: self.log_metrics(metrics.to_dict(), step=int(metrics.epoch)),
                      "training goes on without it")

    def log_metrics(self, values: dict[str, Any], *, step: int, prefix: str = "") -> None:
        """The finite numbers of ``values`` (not epoch, step, booleans) as metrics at ``step``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(prefix + key, float(value), now, step) for key, value in values.items()
                 if key not in _NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)
                 and math.isfinite(value)]
        with _quiet():
            self.client.log_batch(self.run_id, metrics=batch)

    def finish(self) -> None:
        """The evaluations as metrics, the run's files as artefacts, and the status FINISHED; a failure is
        a warning (the run itself is complete)."""
        self._guarded(self._finish, "the run is complete, its MLflow record is not")

    def _finish(self) -> None:
        layout = self.layout
        for split in ("test", "val", "train", "all"):
            path = layout.evaluation(split)
            if path.is_file():
                doc = read_json(path, DataError)
                if isinstance(doc, dict):
                    self.log_metrics({k: v for k, v in doc.items() if k not in ("seed", "limit")}, step=0,
                                     prefix=f"{split}/")
        with _quiet():
            for name in _ARTIFACT_FILES:
                if (layout.root / name).is_file():
                    self.client.log_artifact(self.run_id, str(layout.root / name))
            for path in sorted(layout.root.glob("evaluation-*.json")):
                self.client.log_artifact(self.run_id, str(path))
            for path in sorted(layout.figures.glob("*.png")) if layout.figures.is_dir() else []:
                self.client.log_artifact(self.run_id, str(path), artifact_path="figures")
            self.client.set_terminated(self.run_id, status="FINISHED")

    def end(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        """An ExitStack exit callback: after an error, the status FAILED (KILLED for a stop signal)."""
        if exc_type is not None and not self.failed:
            status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
            with contextlib.suppress(Exception), _quiet():               # the original error is the one to report
                self.client.set_terminated(self.run_id, status=status)
        return False
