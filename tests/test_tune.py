"""``vaekit tune``: the search-space file's checks, and the command end to end in subprocesses on digits:
a short study (each trial a run directory whose metrics give the trial's value), the study resumed by
the same command, a study killed mid-trial (SIGKILL, and SIGTERM) and continued, and its errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vaekit.cli.tune_space import load_space
from vaekit.errors import ConfigError

ENV = {**os.environ, "PYTHONWARNINGS": "error", "OMP_NUM_THREADS": "1"}
TINY = ["--data", "digits", "--hidden", "16", "--no-figures", "--importance-samples", "2", "--batch-size", "256"]


def _vaekit(*argv: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaekit", *argv], cwd=cwd, capture_output=True, text=True,
                          env=ENV, timeout=timeout, check=False)


def _space(tmp_path: Path, doc: object, name: str = "space.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if name.endswith(".json") else str(doc))
    return path


# --------------------------------------------------------------------------- the space file

def test_space_values_are_parsed_as_train_parses_them(tmp_path):
    params = load_space(_space(tmp_path, {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                                          "latent_dim": {"type": "int", "low": 2, "high": 8, "step": 2},
                                          "hidden": ["32,32", "64"], "conditional": [True, False]}))
    by_name = {p.name: p for p in params}
    assert (by_name["lr"].kind, by_name["lr"].low, by_name["lr"].high, by_name["lr"].log) == ("float", 1e-4, 1e-2, True)
    assert by_name["latent_dim"].step == 2.0
    assert by_name["hidden"].value("32,32") == (32, 32)             # as --hidden 32,32 gives it
    assert by_name["conditional"].value(True) is True
    yaml_params = load_space(_space(tmp_path, "beta: [0.5, 1.0]\nlr: {type: float, low: 0.001, high: 0.01}\n",
                                    "space.yaml"))
    assert [(p.name, p.kind) for p in yaml_params] == [("beta", "categorical"), ("lr", "float")]


@pytest.mark.parametrize("doc, words", [
    ({"learning_rate": [0.1]}, "learning_rate: not an option of vaekit train"),
    ({"out": ["a", "b"]}, "out: cannot be searched over"),
    ({"lr": {"type": "float", "low": 0.01, "high": 0.001}}, "lr: \"low\" 0.01 must be below \"high\" 0.001"),
    ({"lr": {"type": "float", "low": 0, "high": 0.1}}, "lr: expected a number > 0, got '0.0'"),
    ({"latent_dim": {"type": "float", "low": 1.5, "high": 4}}, "latent_dim: expected an integer >= 1, got '1.5'"),
    ({"latent_dim": {"type": "int", "low": 0, "high": 4}}, "latent_dim: expected an integer >= 1, got '0'"),
    ({"lr": {"type": "float", "low": -1, "high": 1, "log": True}}, "lr: expected a number > 0, got '-1.0'"),
    ({"beta": {"type": "uniform", "low": 0, "high": 1}}, "beta: \"type\" must be one of float, int, categorical"),
    ({"beta": {"type": "float", "low": 0, "high": 1, "steps": 3}}, "beta: unknown field 'steps'"),
    ({"prior": ["standard", "gaussian"]}, "prior: unknown 'gaussian'; choose one of standard"),
    ({"conditional": ["yes"]}, "conditional: an on/off option takes true or false"),
    ({"hidden": []}, "hidden: \"choices\" must be a non-empty list"),
    ([["lr", 0.1]], "expected a non-empty object"),
])
def test_a_bad_space_names_the_key(tmp_path, doc, words):
    with pytest.raises(ConfigError) as info:
        load_space(_space(tmp_path, doc))
    message = str(info.value)
    assert message.startswith(f"--space {tmp_path / 'space.json'}: ") and words in message and "\n" not in message


# --------------------------------------------------------------------------- end to end

def _metric_best(run_dir: Path, key: str = "val_elbo") -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return max(row[key] for row in rows)


def test_one_short_trial(tmp_path):
    """The quick end-to-end check: one trial of one epoch, its run directory and the study on disk."""
    import optuna

    space = _space(tmp_path, {"latent_dim": [2, 3]})
    proc = _vaekit("tune", "--space", str(space), "--trials", "1", "--out", "t", "--epochs", "1", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trial = optuna.load_study(study_name="vaekit", storage=f"sqlite:///{tmp_path / 't' / 'study.db'}").trials[0]
    assert trial.state.name == "COMPLETE" and trial.user_attrs["run_dir"] == "t/trial-0000"
    assert trial.value == pytest.approx(_metric_best(tmp_path / "t" / "trial-0000"), rel=1e-12)
    assert trial.intermediate_values == {1: trial.value}           # the epoch reported from the training loop
    assert f"trial 0: elbo {trial.value:.4f}" in proc.stdout


@pytest.mark.slow
def test_a_study_of_short_trials_and_its_resumption(tmp_path):
    space = _space(tmp_path, {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}, "latent_dim": [2, 3]})
    argv = ["tune", "--space", str(space), "--trials", "2", "--storage", f"sqlite:///{tmp_path / 'study.db'}",
            "--study", "s1", "--out", "trials", "--epochs", "2", "--sampler-seed", "0", "--json", *TINY]
    proc = _vaekit(*argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)                                   # --json: the trials' output went to stderr
    assert [t["state"] for t in doc["trials"]] == ["complete", "complete"]
    for trial in doc["trials"]:
        run_dir = tmp_path / trial["run_dir"]
        assert run_dir.name == f"trial-{trial['number']:04d}" and (run_dir / "config.json").is_file()
        assert trial["value"] == pytest.approx(_metric_best(run_dir), rel=1e-12)   # the best validation ELBO
        config = json.loads((run_dir / "config.json").read_text())
        assert config["model"]["latent_dim"] == trial["params"]["latent_dim"]
        assert config["extra"]["train"]["lr"] == pytest.approx(trial["params"]["lr"])
        session = json.loads((run_dir / "run.json").read_text())["sessions"][0]["command"]
        assert session[:2] == ["vaekit", "train"] and "--lr" in session      # the trial as a train command
    assert doc["best"][0] == max(doc["trials"], key=lambda t: t["value"])["number"]
    again = _vaekit(*argv[:-len(TINY) - 1], *TINY, cwd=tmp_path)    # the study is finished: nothing to run
    assert again.returncode == 0, again.stderr
    assert "best trial" in again.stdout and "epoch" not in again.stdout
    best = [t["run_dir"] for t in sorted(doc["trials"], key=lambda t: -t["value"])]
    assert f"vaekit report {best[0]} {best[1]} --out trials/best.html" in again.stdout
    report = _vaekit("report", *best, "--out", "best.html", cwd=tmp_path)
    assert report.returncode == 0 and (tmp_path / "best.html").stat().st_size > 0, report.stderr


def test_bad_inputs_are_one_line_errors(tmp_path, monkeypatch, capsys):
    from vaekit.cli import main

    space = _space(tmp_path, {"nope": [1]})
    proc = _vaekit("tune", "--space", str(space), "--trials", "2", "--out", "t", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nope: not an option" in proc.stderr
    monkeypatch.chdir(tmp_path)
    good = str(_space(tmp_path, {"lr": [0.001, 0.01]}, "good.json"))
    for argv, words in ((["--lr", "0.1"], "lr is both searched and given as --lr"),
                        (["--metric", "log-likelihood"], "--metric log-likelihood: needs --val-importance-samples"),
                        (["--latent-dim", "0"], "--latent-dim: expected an integer >= 1")):
        try:
            code = main(["tune", "--space", good, "--trials", "2", "--out", "t", *argv])
        except SystemExit as exc:                                   # argparse's own errors
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "t").exists()                             # nothing written before the checks


def test_trials_that_fail_are_recorded_and_three_in_a_row_stop_the_command(tmp_path, monkeypatch, capsys):
    import optuna

    from vaekit.cli import main

    monkeypatch.chdir(tmp_path)
    space = str(_space(tmp_path, {"free_bits": [1.0], "posterior": ["iaf"]}))   # refused by vaekit train itself
    assert main(["tune", "--space", space, "--trials", "5", "--out", "t", "--no-figures"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "3 trials in a row failed; the last: --free-bits 1.0: " \
        in captured.err
    assert captured.out.count("trial ") == 3 and captured.out.count("  error: --free-bits 1.0") == 3
    study = optuna.load_study(study_name="vaekit", storage=f"sqlite:///{tmp_path / 't' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3


def test_without_optuna_the_command_says_how_to_install_it(tmp_path):
    good = _space(tmp_path, {"lr": [0.001, 0.01]})
    code = ("import sys; sys.modules['optuna'] = None; from vaekit.cli import main; "
            f"sys.exit(main(['tune', '--space', {str(good)!r}, '--trials', '1', '--out', 't']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=ENV,
                          timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "vaekit tune: error: needs Optuna; install it with pip install 'vaekit[tune]'\n"


def _wait_for_epochs(path: Path, epochs: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) >= epochs:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError(f"no {epochs} epochs in {path} after {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_study_resumes_its_trial_from_the_checkpoint(tmp_path, signum):
    """A real process stopped mid-trial (SIGKILL leaves the trial RUNNING in the database; SIGTERM checkpoints
    and queues it again); the same command continues that trial's run directory, then finishes the study."""
    import optuna

    space = _space(tmp_path, {"lr": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True}})
    argv = ["tune", "--space", str(space), "--trials", "2", "--storage", f"sqlite:///{tmp_path / 'study.db'}",
            "--study", "k", "--out", "trials", "--epochs", "6", "--pruner", "none", "--json", *TINY]
    first = subprocess.Popen([sys.executable, "-m", "vaekit", *argv[:argv.index("--epochs") + 1], "400",
                              *argv[argv.index("--epochs") + 2:]], cwd=tmp_path, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epochs(tmp_path / "trials" / "trial-0000" / "metrics.jsonl", 3, first)
    first.send_signal(signum)
    _, err = first.communicate(timeout=60)
    assert first.returncode == (-9 if signum == signal.SIGKILL else 143), err
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{tmp_path / 'study.db'}")
    expected = "RUNNING" if signum == signal.SIGKILL else "FAIL"
    assert [t.state.name for t in study.trials] == [expected] + ([] if signum == signal.SIGKILL else ["WAITING"])
    done_before = len((tmp_path / "trials" / "trial-0000" / "metrics.jsonl").read_text().splitlines())

    second = _vaekit(*argv, cwd=tmp_path, timeout=300)               # --epochs 6: the run goes on to epoch 6
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    states = [(t["state"], t["retry_of"], t["run_dir"]) for t in doc["trials"]]
    assert states[0] == ("fail", None, "trials/trial-0000")
    assert states[1] == ("complete", 0, "trials/trial-0000")           # the same run directory, continued
    assert states[2] == ("complete", None, "trials/trial-0002")
    assert doc["trials"][1]["params"] == doc["trials"][0]["params"]
    rows = [json.loads(line) for line in (tmp_path / "trials/trial-0000/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, max(6, done_before) + 1))   # no epoch twice, none lost
    assert doc["trials"][1]["value"] == pytest.approx(max(r["val_elbo"] for r in rows), rel=1e-12)
    assert "resuming trials/trial-0000" in second.stderr


@pytest.mark.slow
def test_two_processes_share_one_study(tmp_path):
    """Two real processes on one SQLite study: together they run the study's trials, each trial once, each in
    its own run directory."""
    import optuna

    space = _space(tmp_path, {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}})
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    argv = [sys.executable, "-m", "vaekit", "tune", "--space", str(space), "--trials", "4", "--storage", storage,
            "--study", "two", "--out", "trials", "--epochs", "2", "--pruner", "none", *TINY]
    procs = [subprocess.Popen([*argv, "--sampler-seed", str(seed)], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    trials = optuna.load_study(study_name="two", storage=storage).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert 4 <= len(complete) <= 5 and len(complete) == len(trials)          # at most one trial more than asked
    assert len({t.user_attrs["run_dir"] for t in complete}) == len(complete)
    assert len({t.user_attrs["pid"] for t in complete}) == 2                  # both processes ran trials
    for t in complete:
        assert t.value == pytest.approx(_metric_best(tmp_path / t.user_attrs["run_dir"]), rel=1e-12)
