"""Streamed .npy training data (vaekit.data.stream) and its batches (vaekit.training.batches)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vaekit.data import fit_preprocessing, load_dataset
from vaekit.data.stream import NpyStream
from vaekit.errors import ConfigError, DataError
from vaekit.training.batches import BatchPlan


def _rss_file_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(1000, 6, 5), dtype=np.uint8)
    path = tmp_path / "images.npy"
    np.save(path, x)
    return path, x


def test_reads_rows_converted_like_an_array(images):
    path, x = images
    rows = np.sort(np.random.default_rng(1).choice(1000, 700, replace=False))
    s = NpyStream(path, rows=rows, block_bytes=30 * 50)            # 50 rows a block
    assert len(s) == 700 and s.block_rows == 50 and s.num_blocks == 14
    assert (s.kind, s.shape, s.levels) == ("image", (1, 6, 5), 256)
    pos = np.array([699, 0, 51, 50, 3, 650])
    np.testing.assert_array_equal(s.read(pos), x[rows[pos]][:, None])
    np.testing.assert_array_equal(np.concatenate(list(s.iter_blocks())), x[rows][:, None])
    np.testing.assert_array_equal(s.take(np.array([5, 2, 999])), x[[5, 2, 999]][:, None])


def test_block_order_visits_every_row_once_block_by_block(images):
    path, _ = images
    s = NpyStream(path, block_bytes=30 * 64)
    order = s.block_order(torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(1000))
    blocks = (order // s.block_rows).tolist()
    runs = [b for i, b in enumerate(blocks) if i == 0 or b != blocks[i - 1]]
    assert sorted(runs) == list(range(s.num_blocks))                 # each block is one contiguous run
    assert runs != sorted(runs)                                      # in a shuffled order
    again = s.block_order(torch.Generator().manual_seed(0))
    assert torch.equal(order, again)


def test_reading_keeps_resident_memory_bounded(tmp_path):
    x = np.zeros((4096, 4096), dtype=np.uint8)                        # 16 MiB
    path = tmp_path / "big.npy"
    np.save(path, x)
    del x
    s = NpyStream(path, block_bytes=1 << 20)
    before = _rss_file_kb()
    for block in s.iter_blocks():
        assert block.shape[0] == 256
    grown = _rss_file_kb() - before
    assert grown < 4096, f"file-backed resident memory grew by {grown} KiB"   # the file is 16384 KiB


def test_split_matches_the_in_memory_split(images):
    path, x = images
    a = load_dataset(path, seed=3)
    b = load_dataset(path, seed=3, stream=True)
    assert isinstance(b.train, NpyStream) and (b.kind, b.shape, b.levels) == (a.kind, a.shape, a.levels)
    np.testing.assert_array_equal(a.val, b.val)
    np.testing.assert_array_equal(a.test, b.test)
    np.testing.assert_array_equal(a.train, np.concatenate(list(b.train.iter_blocks())))


def test_tabular_standardisation_streamed_equals_numpy(tmp_path):
    x = np.random.default_rng(2).normal(3.0, 2.0, size=(3000, 7)).astype(np.float32)
    path = tmp_path / "table.npy"
    np.save(path, x)
    a = fit_preprocessing(load_dataset(path), "gaussian")
    ds = load_dataset(path, stream=True)
    small = NpyStream(path, rows=ds.train.rows, block_bytes=100 * 7 * 4)   # 100 rows a block: 25 merged
    assert small.num_blocks == 25
    b = fit_preprocessing(dataclasses.replace(ds, train=small), "gaussian")
    np.testing.assert_allclose(b.mean, a.mean, rtol=1e-12)
    np.testing.assert_allclose(b.std, a.std, rtol=1e-10)


def test_batch_plan_shards_an_epoch_without_overlap(images):
    path, x = images
    s = NpyStream(path, block_bytes=30 * 128)
    pp = fit_preprocessing(load_dataset(path, val_fraction=0.1, test_fraction=0.1), "bernoulli")
    seen = []
    for rank in range(3):
        plan = BatchPlan(s, pp, 64, torch.device("cpu"), rank=rank, world=3)
        plan.start_epoch(torch.Generator().manual_seed(4))
        assert plan.steps_per_epoch == 16
        for b in range(plan.steps_per_epoch):
            local = plan.batch(b, torch.Generator().manual_seed(b))
            assert set(local.x.unique().tolist()) <= {0.0, 1.0}    # binarised
            if local.weight:
                seen.append(plan._order[b * 64:(b + 1) * 64].tolist()[slice(*_part(b, rank))])
    flat = sorted(p for part in seen for p in part)
    assert flat == list(range(1000))


def _part(step: int, rank: int) -> tuple[int, int]:
    from vaekit.training.distributed import shard

    return shard(min(64, 1000 - step * 64), 3, rank)


def test_bad_stream_inputs(tmp_path, images):
    path, _ = images
    with pytest.raises(ConfigError, match="stream: applies to .npy files only"):
        load_dataset("digits", stream=True)
    csv = tmp_path / "t.csv"
    csv.write_text("1,2\n3,4\n5,6\n")
    with pytest.raises(ConfigError, match="t.csv"):
        load_dataset(csv, stream=True)
    broken = tmp_path / "broken.npy"
    broken.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="truncated"):
        load_dataset(broken, stream=True)
    bad = tmp_path / "nan.npy"
    arr = np.zeros((10, 3), dtype=np.float32)
    arr[7, 1] = np.nan
    np.save(bad, arr)
    s = NpyStream(bad, block_bytes=12 * 5)
    with pytest.raises(DataError, match=r"nan.npy \(rows 5\.\.9\)"):
        s.read(np.array([8]))


def test_cli_trains_on_a_streamed_file_and_resumes(tmp_path, images):
    path, _ = images
    out = tmp_path / "run"
    base = [sys.executable, "-m", "vaekit", "train", "--data", str(path), "--stream", "--latent-dim", "3",
            "--hidden", "16", "--batch-size", "100", "--out", str(out), "--no-figures", "--importance-samples", "5"]
    first = subprocess.run([*base, "--epochs", "2"], capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr
    assert json.loads((out / "config.json").read_text())["extra"]["data"]["stream"] is True
    again = subprocess.run([sys.executable, "-m", "vaekit", "train", "--out", str(out), "--resume", "--epochs", "3"],
                           capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["val_elbo"]) for r in rows)


def test_commands_read_a_streamed_run_split(tmp_path, images):
    path, x = images
    out = tmp_path / "run"
    train = subprocess.run([sys.executable, "-m", "vaekit", "train", "--data", str(path), "--stream", "--epochs", "1",
                            "--latent-dim", "2", "--hidden", "8", "--out", str(out), "--no-figures",
                            "--importance-samples", "2"], capture_output=True, text=True, timeout=240)
    assert train.returncode == 0, train.stderr
    enc = subprocess.run([sys.executable, "-m", "vaekit", "encode", str(out), "--split", "train", "--limit", "7",
                          "--out", str(tmp_path / "z.npy")], capture_output=True, text=True, timeout=240)
    assert enc.returncode == 0, enc.stderr
    assert np.load(tmp_path / "z.npy").shape[0] == 7


def test_scattered_rows_do_not_map_the_file(tmp_path):
    """Validation rows are scattered through the file; reading them must not leave the file mapped
    (each page fault maps its neighbourhood): peak resident memory stays far below the file's size."""
    path = tmp_path / "wide.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(65536, 4096))   # 256 MiB
    arr[:] = 3
    arr.flush()
    del arr
    code = f"""
import numpy as np
from vaekit.data.stream import NpyStream
def hwm():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM"))
s = NpyStream({str(path)!r}, rows=np.arange(10), block_bytes=1 << 20)
before = hwm()
rows = np.sort(np.random.default_rng(0).choice(65536, 2000, replace=False))
assert (s.take(rows) == 3).all()
print(hwm() - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    grown_kib = int(out.stdout.split()[-1])
    assert grown_kib < 128 * 1024, f"peak resident memory grew by {grown_kib} KiB (file: 256 MiB, rows: 8 MiB)"
