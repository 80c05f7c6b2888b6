"""The command line at a terminal: help without torch and without reST markup, bare ``vaekit``, the lines
``vaekit train`` prints (epoch lines above the progress bar, the final phases, the warm-up warning, where
``--resume`` continues), ``vaekit evaluate`` leaving the recorded results alone, and ``--config`` files
(YAML, a run's own config.json) that repeat a run.

The fast tests run in process or in one short subprocess; those that train (a pseudo-terminal run, the
configuration round trip) are marked slow.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import json
import math
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import torch

from vaekit.cli import build_parser, main
from vaekit.cli import train_options as options
from vaekit.cli.help_text import description, plain
from vaekit.cli.train_checks import warn_long_warmup as _warn_long_warmup
from vaekit.cli.train_cmd import _resume_point
from vaekit.errors import ConfigError
from vaekit.models.config import VAEConfig
from vaekit.models.vae import build_vae
from vaekit.store.layout import RunLayout
from vaekit.store.runs import DataSpec

FIXTURES = Path(__file__).parent / "fixtures"
ENV = {**os.environ, "PYTHONWARNINGS": "error"}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


COMMANDS = sorted(_subcommands())


# --------------------------------------------------------------------------- help: no torch, no markup

_NO_TORCH = """
import contextlib, io, sys, time
t0 = time.perf_counter()
from vaekit.cli import build_parser, main
parser = build_parser()
commands = sorted(next(a for a in parser._actions if a.__class__.__name__ == '_SubParsersAction').choices)
for argv in ([], ['--help'], *[[name, '--help'] for name in commands]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    assert code == (2 if not argv else 0), (argv, code, err.getvalue())
    assert 'usage: vaekit' in out.getvalue() + err.getvalue(), argv
heavy = sorted(m for m in ('torch', 'matplotlib', 'PIL', 'sklearn', 'safetensors') if m in sys.modules)
print(len(commands), time.perf_counter() - t0, heavy)
"""


def test_help_of_every_command_imports_no_torch():
    """``vaekit``, ``vaekit --help`` and ``vaekit CMD --help`` for every command, in a fresh interpreter:
    none of them imports torch (2 s) or another heavy library."""
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH], capture_output=True, text=True, env=ENV, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    n, seconds, heavy = proc.stdout.split(maxsplit=2)
    assert int(n) == len(COMMANDS) >= 7
    assert heavy.strip() == "[]", f"building the parser or printing a help imported {heavy.strip()}; import them " \
        "inside the functions that run the command (see vaekit.cli's docstring)"


def test_python_m_vaekit_help_imports_no_torch():
    """The real entry point (``python -m vaekit train --help``), seen by ``-X importtime``."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "vaekit", "train", "--help"], capture_output=True,
                          text=True, env=ENV, timeout=60, check=False)
    assert proc.returncode == 0 and "--config FILE" in proc.stdout, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert "vaekit.cli.train_options" in imported
    assert "torch" not in imported and "numpy" not in imported


def test_mirrored_choices_are_the_registries():
    """The option table writes the names of registries that live in torch modules (so that the parser needs
    no torch); each must equal its registry, or the help and the checks would drift from the models."""
    for where, names in options.MIRRORED.items():
        module, _, table = where.partition(":")
        assert tuple(getattr(importlib.import_module(module), table)) == names, \
            f"cli/train_options.py MIRRORED[{where!r}] = {names} must list the registry's names in order"
    for where, value in options.MIRRORED_VALUES.items():
        module, _, name = where.partition(":")
        assert getattr(importlib.import_module(module), name) == value, f"MIRRORED_VALUES[{where!r}]"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_no_rest_markup(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vaekit")
    assert "`" not in out, [line for line in out.splitlines() if "`" in line]
    assert not re.search(r":(mod|class|func|meth|data|attr|obj|pep):", out)


def test_plain_turns_rest_into_text():
    assert plain(":mod:`~vaekit.training.distributed`") == "distributed"
    assert plain(":func:`vaekit.fit` and :py:class:`the run <vaekit.store.runs.Run>`") == "vaekit.fit and the run"
    assert plain("``--config`` or ``vaekit train  --resume``") == "--config or 'vaekit train --resume'"
    assert plain("FUNCTION(**arch_args) writes figures/*.png") == "FUNCTION(**arch_args) writes figures/*.png"
    text = description("First ``a``\nparagraph.\n\n  indented\n  example")
    assert text == "First a paragraph.\n\n  indented\n  example"


def test_train_help_describes_config_files(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "YAML" in out and "config.json" in out and "vaekit.training.distributed" in out


def test_bare_vaekit_lists_the_commands_and_exits_2(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    listed = {line.split()[0]: line for line in captured.err.splitlines() if line.startswith("  ") and line.split()}
    for name in _subcommands():
        assert name in listed, captured.err
        assert len(listed[name].split()) > 2, listed[name]            # the command and its one-line help
    assert "COMMAND --help" in captured.err


def test_package_root_is_lazy_and_complete():
    """``import vaekit`` imports no torch; every public name still resolves (on first use)."""
    code = "import sys, vaekit; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60,
                          check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    import vaekit

    assert len(vaekit.__all__) > 40 and set(vaekit.__all__) <= set(dir(vaekit))
    for name in vaekit.__all__:
        assert getattr(vaekit, name).__name__ == name, name
    assert vaekit.VAEConfig is VAEConfig and vaekit.build_vae is build_vae
    with pytest.raises(AttributeError, match="no_such_name"):
        vaekit.no_such_name  # noqa: B018


# --------------------------------------------------------------------------- train's lines


def test_long_kl_warmup_is_warned_about(capsys):
    _warn_long_warmup({"kl_warmup": 10.0, "epochs": 5, "beta": 2.0})
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--kl-warmup 10 is longer than --epochs 5" in err
    assert "about 1 of --beta 2" in err                                # β N / W = 2 · 5 / 10
    for warmup in (5.0, 0.0):
        _warn_long_warmup({"kl_warmup": warmup, "epochs": 5, "beta": 1.0})
        assert capsys.readouterr().err == ""


def _checkpoint_json(run: Path, **changes) -> None:
    path = RunLayout.of(run).checkpoint.with_suffix(".json")
    doc = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "partial_epoch":
            doc["extra"]["partial_epoch"] = value
        else:
            doc[key] = value
    path.write_text(json.dumps(doc))


def test_resume_says_where_it_continues(tmp_path):
    run = shutil.copytree(FIXTURES / "run_v1", tmp_path / "run")        # its checkpoint: epoch 2, step 24
    layout = RunLayout.of(run)
    assert _resume_point(layout, 5) == f"resuming {run} at epoch 3 of 5, step 24"
    assert _resume_point(layout, 2).startswith(f"resuming {run}: training finished at epoch 2, step 24")
    _checkpoint_json(run, epoch=1, step=17, partial_epoch={"epoch": 2, "batches": 5})
    assert _resume_point(layout, 2) == f"resuming {run} at epoch 2 of 2, step 17 (mid-epoch, after 5 of its steps)"
    layout.checkpoint.with_suffix(".json").write_text("{not json")
    assert _resume_point(layout, 2) == f"resuming {run}"                # the loader reports the damage
    for path in layout.checkpoint.parent.iterdir():
        path.unlink()
    assert _resume_point(layout, 3) == f"resuming {run}: no checkpoint yet, starting at epoch 1 of 3"


# --------------------------------------------------------------------------- evaluate writes only when asked


def _files(directory: Path) -> dict[str, bytes]:
    """The run's files and their bytes (not the lock file, which a reader creates to hold a shared lock)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != ".lock"}


EVALUATE = ["--importance-samples", "10", "--limit", "20", "--json"]


def test_evaluate_leaves_the_run_alone_unless_saved(tmp_path, capsys):
    run = shutil.copytree(FIXTURES / "run_v1", tmp_path / "run")
    before = _files(run)
    assert main(["evaluate", str(run), *EVALUATE]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["importance_samples"] == 10 and printed["n"] == 20
    assert _files(run) == before                                        # evaluation-test.json byte-identical

    assert main(["evaluate", str(run), *EVALUATE, "--save"]) == 0
    captured = capsys.readouterr()
    saved = run / "evaluation-test-K10-seed0-limit20.json"
    assert json.loads(captured.out) == json.loads(saved.read_text()) == printed     # same seed, same numbers
    assert captured.err.strip() == f"wrote {saved}"
    after = _files(run)
    assert set(after) == set(before) | {saved.name}
    assert all(after[name] == content for name, content in before.items())

    saved.write_text("{}")
    assert main(["evaluate", str(run), *EVALUATE, "--save"]) == 2       # never replaced silently
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err and saved.name in err
    assert saved.read_text() == "{}"
    assert main(["evaluate", str(run), *EVALUATE, "--save", "--force"]) == 0
    assert json.loads(saved.read_text()) == printed
    capsys.readouterr()
    assert main(["evaluate", str(run), *EVALUATE, "--force"]) == 2      # --force means nothing without --save
    assert "--save" in capsys.readouterr().err


def test_saved_names_carry_the_options(tmp_path, capsys):
    run = shutil.copytree(FIXTURES / "run_v1", tmp_path / "run")
    assert main(["evaluate", str(run), "--importance-samples", "3", "--split", "val", "--seed", "7", "--save"]) == 0
    out = capsys.readouterr().out
    assert "log p(x), K = 3" in out and f"wrote {run / 'evaluation-val-K3-seed7.json'}" in out
    assert (run / "evaluation-val-K3-seed7.json").is_file() and not (run / "evaluation-val.json").exists()


# --------------------------------------------------------------------------- --config: YAML, a run's config.json


def _resolve(*argv: str) -> tuple[dict, set]:
    from vaekit.cli.train_resume import config_file_values

    return options.resolve(build_parser().parse_args(["train", *argv]), config_file_values)


def test_yaml_config_is_read_like_json(tmp_path):
    values = {"latent_dim": 3, "hidden": [16, 8], "lr": 0.002, "kl_warmup": 2, "decoder_variance": "learned",
              "arch_args": {"activation": "relu"}, "image_size": [8, 8], "no_figures": True, "grad_clip": None}
    (tmp_path / "o.json").write_text(json.dumps(values))
    yaml_text = ("latent_dim: 3\nhidden: [16, 8]\nlr: 2.0e-3\nkl_warmup: 2\ndecoder_variance: learned\n"
                 "arch_args: {activation: relu}\nimage_size: [8, 8]\nno_figures: true\ngrad_clip: null\n")
    for name in ("o.yaml", "o.yml"):
        (tmp_path / name).write_text(yaml_text)
        assert _resolve("--config", str(tmp_path / name)) == _resolve("--config", str(tmp_path / "o.json"))
    got, explicit = _resolve("--config", str(tmp_path / "o.yaml"), "--latent-dim", "5")
    assert got["latent_dim"] == 5 and got["hidden"] == (16, 8) and got["lr"] == 0.002 and got["image_size"] == (8, 8)
    assert explicit == {"latent_dim", "hidden", "lr", "kl_warmup", "decoder_variance", "arch_args", "image_size",
                        "no_figures"}


@pytest.mark.parametrize("text, needle", [
    ("latent_dim: [1, 2", "not valid YAML"),
    ("!!python/object/apply:os.system ['echo pwned']", "not valid YAML"),     # safe_load: no Python objects
    ("- 1\n- 2\n", "expected a YAML mapping"),
    ("", "expected a YAML mapping"),
    ("latent_dims: 3\n", "unknown key 'latent_dims'"),
    ("latent_dim: zero\n", "latent_dim"),
    ("trust_code: true\n", "--trust-code on the command line"),
])
def test_bad_yaml_is_one_config_error(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(needle)) as info:
        _resolve("--config", str(path))
    assert "\n" not in str(info.value) and str(info.value).startswith(f"--config {path}")


def test_a_runs_config_json_gives_its_options():
    """--config RUN/config.json: the nested model, data and training sections become the options that
    rebuild the same model configuration; the device is not taken from it."""
    source = FIXTURES / "run_v1" / "config.json"
    values, explicit = _resolve("--config", str(source))
    stored = json.loads(source.read_text())
    assert values["hidden"] == (16,) and values["activation"] == "tanh" and values["latent_dim"] == 2
    assert values["epochs"] == 2 and values["data"] == "digits" and values["decoder_variance"] == "optimal"
    assert values["device"] == "auto" and values["test_fraction"] == 0.1
    assert explicit == {"hidden", "latent_dim", "epochs", "precision"}    # what differs from the defaults
    assert values["precision"] == "fp32"                   # stored before "auto" became the default: kept
    config = options.model_config(values, explicit, tuple(stored["model"]["data_shape"]))
    assert config.to_dict() == VAEConfig.from_dict(stored["model"]).to_dict()
    # (stored before --gradient and --objective-args existed: their defaults)
    assert options.train_config(values).to_dict() == {"gradient": "reparam", "objective_args": None,
                                                      **stored["extra"]["train"]}
    assert options.data_spec(values) == DataSpec.from_dict(stored["extra"]["data"])
    values, _ = _resolve("--config", str(source), "--epochs", "7", "--hidden", "8")    # the command line wins
    assert values["epochs"] == 7 and values["hidden"] == (8,)


def test_a_linear_runs_config_json_makes_its_configuration():
    source = FIXTURES / "run_v1_linear" / "config.json"
    stored = json.loads(source.read_text())
    values, explicit = _resolve("--config", str(source))
    assert values["arch"] == "linear" and not explicit & {"hidden", "activation", "arch_args", "device"}
    config = options.model_config(values, explicit, tuple(stored["model"]["data_shape"]))
    assert config.to_dict() == VAEConfig.from_dict(stored["model"]).to_dict()


def test_a_runs_config_json_refuses_what_the_command_line_cannot_make(tmp_path):
    doc = json.loads((FIXTURES / "run_v1" / "config.json").read_text())
    doc["model"]["initial_variance"] = 0.5
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="initial_variance 0.5 has no command-line option"):
        _resolve("--config", str(tmp_path / "a.json"))
    doc["format_version"] = 99
    (tmp_path / "b.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"^--config .*b\.json: format version 99 is newer"):
        _resolve("--config", str(tmp_path / "b.json"))
    del doc["extra"]["train"]
    doc["format_version"] = 2
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="not a run written by 'vaekit train'"):
        _resolve("--config", str(tmp_path / "c.json"))


# --------------------------------------------------------------------------- VAEConfig's default c


def test_vaeconfig_default_decoder_variance_is_the_command_lines():
    assert VAEConfig((4,)).decoder_variance == "optimal" == options.BY_NAME["decoder_variance"].default
    assert VAEConfig.from_dict(VAEConfig((4,)).to_dict()).decoder_variance == "optimal"


def test_a_stored_config_without_decoder_variance_keeps_c_1():
    """A configuration written without the key loads as it was written (c = 1): log p(x|z) is the
    density of N(f(z), I), computed here independently."""
    config = VAEConfig.from_dict({"data_shape": [3], "latent_dim": 2, "arch": "linear"})
    assert config.decoder_variance == 1.0
    torch.manual_seed(0)
    model = build_vae(config)
    z, x = torch.randn(4, 2), torch.randn(4, 3)
    mean = model.decoder_mean(z)
    expected = (-0.5 * (x - mean) ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(model.log_px(x, z), expected)
    stored = json.loads((FIXTURES / "run_v1" / "config.json").read_text())["model"]
    assert VAEConfig.from_dict(stored).decoder_variance == stored["decoder_variance"] == "optimal"


# --------------------------------------------------------------------------- real runs (slow)

TINY = ["--data", "digits", "--hidden", "16", "--latent-dim", "2", "--batch-size", "64", "--importance-samples", "5"]


def _render(raw: bytes) -> list[str]:
    """What a terminal shows after ``raw``: carriage returns overwrite the line, ESC[nA moves up, other
    escape sequences are ignored."""
    screen: list[list[str]] = [[]]
    row = col = 0
    text = raw.decode("utf-8", "replace")
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            match = re.match(r"\x1b\[(\d*)([A-Za-z])", text[i:])
            if match:
                if match.group(2) == "A":
                    row = max(0, row - int(match.group(1) or 1))
                i += len(match.group(0))
                continue
        elif ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            while len(screen) <= row:
                screen.append([])
        else:
            line = screen[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = ch
            col += 1
        i += 1
    return ["".join(line).rstrip() for line in screen]


def _run_in_terminal(argv: list[str], cwd: Path, timeout: float = 300) -> tuple[int, bytes]:
    """``python -m vaekit ARGV`` with stdout and stderr on a pseudo-terminal of 120 x 40."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", *argv], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, cwd=cwd, env={**ENV, "TERM": "xterm"})
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:                               # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=30), b"".join(chunks)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


@pytest.fixture(scope="module")
def terminal_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("terminal")
    code, raw = _run_in_terminal(["train", *TINY, "--epochs", "2", "--kl-warmup", "3", "--out", "a"], root)
    return root, code, raw


@pytest.mark.slow
def test_epoch_lines_stay_above_the_progress_bar(terminal_run):
    root, code, raw = terminal_run
    screen = _render(raw)
    assert code == 0, "\n".join(screen)
    assert b"\r" in raw and "%|" in raw.decode(errors="replace")          # a progress bar was drawn
    for epoch in (1, 2):
        assert any(re.match(rf"epoch {epoch}/2  train ELBO -?\d", line) for line in screen), "\n".join(screen)
    phases = [line for line in screen if line.startswith(("evaluating the best", "  evaluated in", "writing the",
                                                          "  wrote "))]
    assert [p.split()[0] for p in phases] == ["evaluating", "evaluated", "writing", "wrote"], "\n".join(screen)
    assert "on the test split (180 examples, K = 5)" in phases[0]
    assert any(re.match(r"train: 100%\|", line) for line in screen)          # the bar stays, complete
    warnings = [line for line in screen if line.startswith("vaekit train: warning:")]
    assert len(warnings) == 1 and "--kl-warmup 3 is longer than --epochs 2" in warnings[0]


@pytest.mark.slow
def test_resume_names_the_epoch_and_step(terminal_run, tmp_path):
    root, code, _ = terminal_run
    assert code == 0
    run = shutil.copytree(root / "a", tmp_path / "a")
    step = json.loads((run / "checkpoints" / "last.json").read_text())["step"]
    proc = subprocess.run([sys.executable, "-m", "vaekit", "train", "--out", str(run), "--resume", "--epochs", "3",
                           "--no-figures", "--importance-samples", "5"], capture_output=True, text=True, env=ENV,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"resuming {run} at epoch 3 of 3, step {step}"
    assert lines[1].startswith("epoch 3/3  train ELBO")
    assert "--kl-warmup 3 is longer" not in proc.stderr                   # 3 epochs now: β reaches --beta


@pytest.mark.slow
def test_config_round_trip_repeats_the_run(terminal_run):
    """Train with --config RUN/config.json: the same configuration and bitwise the same weights; a YAML
    file with the same options gives the same run too."""
    root, code, _ = terminal_run
    assert code == 0
    (root / "a.yaml").write_text("data: digits\nhidden: [16]\nlatent_dim: 2\nbatch_size: 64\nepochs: 2\n"
                                 "kl_warmup: 3\n")
    for out, config in (("b", "a/config.json"), ("c", "a.yaml")):
        proc = subprocess.run([sys.executable, "-m", "vaekit", "train", "--config", config, "--out", out,
                               "--no-progress", "--no-figures", "--importance-samples", "5"], cwd=root,
                              capture_output=True, text=True, env=ENV, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        assert json.loads((root / out / "config.json").read_text()) == json.loads((root / "a/config.json").read_text())
        assert (root / out / "model.safetensors").read_bytes() == (root / "a/model.safetensors").read_bytes()
        assert (root / out / "checkpoints/last.safetensors").read_bytes() == \
            (root / "a/checkpoints/last.safetensors").read_bytes()
