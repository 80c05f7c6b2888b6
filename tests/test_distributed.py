"""Data-parallel training: real multi-process torchrun jobs (gloo on the CPU, loopback only).

The claim under test (vaekit.training.batches, vaekit.training.distributed): a step on R ranks with global batch B
makes the same update as one process with batch B, so runs agree whatever the number of ranks,
and a checkpoint resumes with another number of ranks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vaekit.training import fit
from vaekit.training.distributed import shard

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import train_setup  # noqa: E402

WORKER = Path(__file__).with_name("ddp_worker.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(nproc: int, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [str(TORCHRUN), "--standalone", f"--nproc-per-node={nproc}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _reference(n_train: int, batch: int, epochs: int, variance: str):
    model, train_x, val_x, config, pp = train_setup(n_train, batch, epochs, variance)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, train_x, val_x, config, preprocessing=pp)
    return initial, model.state_dict(), result


@pytest.mark.parametrize(("count", "parts"), [(10, 3), (2, 3), (0, 2), (37, 2), (128, 4)])
def test_shard_matches_tensor_split(count, parts):
    expected = [len(p) for p in torch.tensor_split(torch.arange(count), parts)]
    bounds = [shard(count, parts, r) for r in range(parts)]
    assert [hi - lo for lo, hi in bounds] == expected
    assert bounds[0][0] == 0 and bounds[-1][1] == count
    assert all(bounds[r][1] == bounds[r + 1][0] for r in range(parts - 1))


@pytest.mark.slow  # a whole run of processes; the default suite stays under 5 minutes
@pytest.mark.parametrize(("n_train", "batch", "variance", "sizes"),
                         [(37, 37, "optimal", [[19], [18]]),         # one step, uneven halves
                          (33, 32, "learned", [[16, 1], [16, 0]])])  # last batch of 1: rank 1 stands in
def test_steps_on_two_ranks_equal_one_rank(tmp_path, n_train, batch, variance, sizes):
    _torchrun(2, str(WORKER), str(tmp_path), str(n_train), str(batch), "1", variance)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["sizes"] for r in ranks] == sizes and all(r["world"] == 2 for r in ranks)
    initial, params, result = _reference(n_train, batch, 1, variance)
    ddp = load_file(str(tmp_path / "params.safetensors"))
    assert set(ddp) == set(params)
    moved = max(float((params[k] - initial[k]).abs().max()) for k in params)
    assert moved > 1e-3                                    # the step did change the parameters
    for k, value in params.items():
        torch.testing.assert_close(ddp[k], value, rtol=1e-10, atol=1e-12, msg=k)
    assert ranks[0]["val_elbo"] == pytest.approx([m.val_elbo for m in result.history], abs=1e-9)


@pytest.mark.slow
def test_cli_two_ranks_match_one_rank_and_resume_with_one(tmp_path):
    # fp32: in bf16 each rank's partial weight gradient is rounded before the all-reduce sums it, so two ranks
    # and one agree to bf16's precision only; this test holds them to float32's
    common = ["--data", "digits", "--latent-dim", "4", "--hidden", "32", "--batch-size", "50", "--seed", "5",
              "--device", "cpu", "--no-figures", "--importance-samples", "10", "--precision", "fp32"]
    two = tmp_path / "two"
    out = _torchrun(2, "-m", "vaekit", "train", *common, "--epochs", "2", "--out", str(two)).stdout
    assert out.count("epoch 1/2") == 1 and "run directory" in out         # rank 0 alone reports
    rows = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.loads((two / "checkpoints" / "last.json").read_text())["epoch"] == 2

    resumed = subprocess.run([sys.executable, "-m", "vaekit", "train", "--out", str(two), "--resume",
                              "--epochs", "4"], capture_output=True, text=True, timeout=240, env=_env())
    assert resumed.returncode == 0, resumed.stderr
    one = tmp_path / "one"
    single = subprocess.run([sys.executable, "-m", "vaekit", "train", *common, "--epochs", "4", "--out", str(one)],
                            capture_output=True, text=True, timeout=240, env=_env())
    assert single.returncode == 0, single.stderr
    a = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in a] == [1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):
        for key in ("train_elbo", "train_kl", "val_elbo", "val_kl"):
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-4), (x["epoch"], key)
    wa, wb = load_file(str(two / "model.safetensors")), load_file(str(one / "model.safetensors"))
    for k in wb:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4, msg=k)


@pytest.mark.slow  # a whole run of processes; the default suite stays under 5 minutes
def test_auto_resume_starts_then_continues(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "vaekit", "train", "--data", "digits", "--latent-dim", "2", "--hidden", "8",
           "--out", str(out), "--auto-resume", "--no-figures", "--importance-samples", "2"]
    first = subprocess.run([*cmd, "--epochs", "1"], capture_output=True, text=True, timeout=240, env=_env())
    assert first.returncode == 0, first.stderr
    second = subprocess.run([*cmd, "--epochs", "2"], capture_output=True, text=True, timeout=240, env=_env())
    assert second.returncode == 0, second.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


@pytest.mark.slow  # a whole run of processes; the default suite stays under 5 minutes
def test_single_process_interrupt_resumed_on_two_ranks(tmp_path, monkeypatch):
    """A Ctrl-C checkpoint taken mid-epoch by one process, finished by two: the same run."""
    import vaekit.training.step as train_mod

    n_train, batch, epochs = 64, 16, 2                 # 4 steps an epoch; interrupted in step 6 (epoch 2)
    model, train_x, val_x, config, pp = train_setup(n_train, batch, epochs, "optimal")
    real, calls = train_mod.batch_loss, [0]

    def interrupt(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "batch_loss", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(model, train_x, val_x, config, preprocessing=pp, run_dir=tmp_path / "run")
    monkeypatch.undo()
    saved = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert saved["extra"]["partial_epoch"]["batches"] == 1
    _torchrun(2, str(WORKER), str(tmp_path), str(n_train), str(batch), str(epochs), "optimal", "resume")
    _, params, reference = _reference(n_train, batch, epochs, "optimal")
    ddp = load_file(str(tmp_path / "params.safetensors"))
    for k, value in params.items():
        torch.testing.assert_close(ddp[k], value, rtol=1e-10, atol=1e-12, msg=k)
    history = json.loads((tmp_path / "rank0.json").read_text())["history"]
    for got, want in zip(history, [m.to_dict() for m in reference.history], strict=True):
        for key in ("train_loss", "train_elbo", "train_kl", "val_elbo"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9), (got["epoch"], key)


def test_ranks_that_disagree_are_named_by_the_first_option_that_differs(monkeypatch):
    from vaekit.training import distributed

    texts = [json.dumps({"--latent-dim": "5", "--seed": "0"}), json.dumps({"--latent-dim": "5", "--seed": "0"}),
             json.dumps({"--latent-dim": "4", "--seed": "1"})]
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "rank", lambda: 2)
    monkeypatch.setattr(distributed, "gather_texts", lambda text, device="cpu": texts)
    with pytest.raises(distributed.RankDisagreement) as info:
        distributed.check_agreement({"--latent-dim": "4", "--seed": "1"})
    assert str(info.value) == ("--latent-dim: rank 2 has 4, rank 0 has 5; every rank must be started with the same "
                               "configuration") and info.value.rank == 2
    monkeypatch.setattr(distributed, "gather_texts", lambda text, device="cpu": texts[:2])
    distributed.check_agreement({"--latent-dim": "5", "--seed": "0"})                 # agreeing ranks: nothing


@pytest.mark.slow                                  # a two-process torchrun job: about 20 s on 2 cores
def test_torchrun_ranks_with_different_options_exit_2_with_one_line(tmp_path):
    """``--latent-dim 5`` on rank 0 and 4 on rank 1: each rank exits 2 at start-up, rank 0 says which option
    differs in one line, and nothing is written."""
    script = tmp_path / "launch.py"
    script.write_text(
        "import os, sys\n"
        "sys.argv = ['vaekit', 'train', '--hidden', '8', '--epochs', '1', '--no-progress', '--no-figures',\n"
        "            '--device', 'cpu', '--out', sys.argv[1],\n"
        "            '--latent-dim', '4' if os.environ['RANK'] == '1' else '5']\n"
        "from vaekit.cli.exits import run\n"
        "run()\n")
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node=2", str(script), str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=_env())
    lines = [line for line in proc.stderr.splitlines() if line.startswith("vaekit")]
    assert lines == ["vaekit train: error: --latent-dim: rank 1 has 4, rank 0 has 5; every rank must be started "
                     "with the same configuration"], proc.stderr[-3000:]
    assert proc.returncode != 0 and "internal error" not in proc.stderr
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", proc.stderr)
    assert codes and set(codes) == {"2"}, proc.stderr[-3000:]                       # both ranks: exit code 2
    assert not (tmp_path / "run").exists()
