"""Several machines, and the failures of a torchrun job, for real (slow: ``python -m pytest -m slow``).

Two torchrun agents on this machine stand in for two nodes: ``--nnodes 2 --nproc-per-node 1
--rdzv-backend c10d --rdzv-endpoint 127.0.0.1:PORT`` (loopback; with the c10d rendezvous the node ranks are
assigned by the rendezvous, so no ``--node-rank``). Checked:

* the two-node run equals the one-process run (the same tolerances as tests/test_distributed.py);
* an agent killed with SIGKILL: its orphaned worker notices and stops by itself (exit 143), the surviving
  agent restarts its worker (``--max-restarts 1``), a new agent takes the dead one's place, and the run,
  resumed (``--auto-resume``) from the last completed epoch, ends with bitwise the parameters of the
  uninterrupted two-node run;
* SIGTERM to the workers of a torchrun job (what Slurm does): every rank exits 143, one line in all;
* a frozen rank (SIGSTOP) stops the run after ``--dist-timeout`` seconds, with one line.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="torchrun, /proc, signals")]

TORCHRUN = Path(sys.executable).with_name("torchrun")
EPOCHS = 20
# fp32: in bf16 (the CPU default where bf16 is native) each rank's partial weight gradient is rounded before the
# all-reduce sums it, so several ranks and one agree to bf16's precision only; these tests hold them to float32's
TRAIN = ["-m", "vaekit", "train", "--data", "digits", "--hidden", "16", "--latent-dim", "2", "--batch-size", "64",
         "--seed", "3", "--device", "cpu", "--no-progress", "--no-figures", "--importance-samples", "2",
         "--precision", "fp32"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    # torch >= 2.4 shares the rendezvous TCPStore with the workers by default, and then a node that joins a
    # later round (a replacement for a dead one) waits forever for the bootstrap address (pytorch#135712)
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="error", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class _Agent:
    """One torchrun agent (a node), its output in files."""

    def __init__(self, tmp: Path, name: str, port: int, out: Path, *extra: str, restarts: int = 0):
        self.out_path, self.err_path = tmp / f"{name}.out", tmp / f"{name}.err"
        cmd = [str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"vaekit-{port}", "--max-restarts",
               str(restarts), "--monitor-interval", "0.5", *TRAIN, "--out", str(out), *extra]
        with self.out_path.open("w") as fo, self.err_path.open("w") as fe:
            self.proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=_env(), start_new_session=True)

    def wait(self, timeout: float = 240) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        for pid in [*_children(self.proc.pid), self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    def text(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()


def _two_nodes(tmp: Path, out: Path, *extra: str, restarts: int = 0) -> tuple[_Agent, _Agent, int]:
    port = _free_port()
    first = _Agent(tmp, f"{out.name}-a", port, out, *extra, restarts=restarts)
    deadline = time.monotonic() + 60
    while not _listening(port):                 # the first agent hosts the rendezvous store
        assert first.proc.poll() is None and time.monotonic() < deadline, first.text()
        time.sleep(0.1)
    return first, _Agent(tmp, f"{out.name}-b", port, out, *extra, restarts=restarts), port


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(run / "checkpoints" / "last.safetensors")).items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uninterrupted two-node run and the one-process run, EPOCHS epochs each."""
    tmp = tmp_path_factory.mktemp("multinode")
    two, one = tmp / "two", tmp / "one"
    agents = _two_nodes(tmp, two, "--epochs", str(EPOCHS))[:2]
    single = subprocess.run([sys.executable, *TRAIN, "--epochs", str(EPOCHS), "--out", str(one)],
                            capture_output=True, text=True, timeout=240, env=_env())
    codes = [a.wait() for a in agents]
    assert codes == [0, 0], "\n".join(a.text()[-3000:] for a in agents)
    assert single.returncode == 0, single.stderr
    return two, one, agents


def test_two_nodes_equal_one_process(runs):
    two, one, agents = runs
    assert sum(a.out_path.read_text().count("run directory") for a in agents) == 1     # rank 0 alone reports
    a, b = _rows(two), _rows(one)
    assert [r["epoch"] for r in a] == list(range(1, EPOCHS + 1))
    for x, y in zip(a, b, strict=True):
        for key in ("train_elbo", "train_kl", "val_elbo", "val_kl"):
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-4), (x["epoch"], key)
    wa, wb = _weights(two), _weights(one)
    for k in wb:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4, msg=k)


def test_a_killed_agent_is_replaced_and_the_run_ends_the_same(runs, tmp_path):
    two, _, _ = runs
    out = tmp_path / "rejoin"
    extra = ("--epochs", str(EPOCHS), "--auto-resume")
    survivor, victim, port = _two_nodes(tmp_path, out, *extra, restarts=1)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() or len(_rows(out)) < 3:
            assert survivor.proc.poll() is None and time.monotonic() < deadline, survivor.text() + victim.text()
            time.sleep(0.05)
        orphans = _children(victim.proc.pid)
        assert len(orphans) == 1
        victim.proc.send_signal(signal.SIGKILL)          # the agent only: its worker is in a session of its own
        victim.proc.wait(timeout=30)
        killed_at = time.monotonic()
        while _alive(orphans[0]):                        # the orphan notices its agent is gone and stops
            assert time.monotonic() - killed_at < 30, "the orphaned worker of a killed agent kept running"
            time.sleep(0.1)
        assert len(_rows(out)) < EPOCHS, "the run ended before the agent was killed: make EPOCHS larger"
        replacement = _Agent(tmp_path, "rejoin-c", port, out, *extra, restarts=1)
        codes = [survivor.wait(), replacement.wait()]
        assert codes == [0, 0], survivor.text()[-3000:] + replacement.text()[-3000:]
    finally:
        for agent in (survivor, victim):
            if agent.proc.poll() is None:
                agent.kill()
    assert [r["epoch"] for r in _rows(out)] == list(range(1, EPOCHS + 1))
    wa, wb = _weights(out), _weights(two)
    for k in wb:
        assert torch.equal(wa[k], wb[k]), k
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(out)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(two)]


def _standalone(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "--monitor-interval", "0.5", *TRAIN,
           "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path) -> list[int]:
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "last.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) == 2
    return workers


def test_sigterm_to_the_workers_stops_every_rank_with_143(tmp_path):
    out = tmp_path / "run"
    proc = _standalone(out, "--epochs", "100000")
    try:
        workers = _wait_for_checkpoint(proc, out)
        time.sleep(0.3)
        for pid in workers:                              # as Slurm's scancel does
            os.kill(pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.startswith("vaekit train:")]
    assert lines == [f"vaekit train: stopped by SIGTERM; resume with: vaekit train --out {out} --resume"], err
    codes = [line.split(":")[1].split()[0] for line in err.splitlines() if line.strip().startswith("exitcode")]
    assert codes and set(codes) == {"143"}, err
    doc = json.loads((out / "checkpoints" / "last.json").read_text())
    assert "partial_epoch" not in doc["extra"]           # several processes: the last completed epoch
    assert [r["epoch"] for r in _rows(out)] == list(range(1, doc["epoch"] + 1))
    resumed = subprocess.run([sys.executable, "-m", "vaekit", "train", "--out", str(out), "--resume", "--epochs",
                              str(doc["epoch"] + 1), "--no-progress"], capture_output=True, text=True, timeout=240,
                             env=_env())
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in _rows(out)] == list(range(1, doc["epoch"] + 2))


def test_a_frozen_rank_stops_the_run_after_dist_timeout(tmp_path):
    out = tmp_path / "run"
    proc = _standalone(out, "--epochs", "100000", "--dist-timeout", "3")
    frozen = None
    try:
        workers = _wait_for_checkpoint(proc, out)
        frozen = max(workers)
        os.kill(frozen, signal.SIGSTOP)
        stopped_at = time.monotonic()
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr or ()], daemon=True)
        reader.start()
        err_lines: list[str] = []
        while not (err_lines and err_lines[-1].startswith("vaekit train: error:")):   # a rank still running
            try:
                err_lines.append(lines.get(timeout=max(0.1, stopped_at + 60 - time.monotonic())))
            except queue.Empty:
                pytest.fail("no error line within 60 s of freezing a rank:\n" + "".join(err_lines))
        waited = time.monotonic() - stopped_at
        os.kill(frozen, signal.SIGCONT)                  # let torchrun's SIGTERM reach it
        proc.wait(timeout=120)
        reader.join(timeout=30)
    finally:
        if frozen is not None:
            try:
                os.kill(frozen, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    assert "no answer from the other ranks within --dist-timeout 3 s" in err_lines[-1], "".join(err_lines)
    assert waited < 3 + 20, waited
    assert proc.returncode != 0
