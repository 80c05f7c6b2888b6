"""Hostile and unlucky files (issue 14): crafted checkpoints, memory bombs, wrong types, file-system
failures and run directories whose names are not valid UTF-8.

The command-line contract for each input a user can hand to ``vaekit`` (exit 2, one line naming the
file) is checked by the catalogue in ``tests/test_bad_inputs.py``; the tests here check the loaders
one by one (every tampering of a checkpoint, the memory each bomb costs), the file-system errors
(raised in-process where a real read-only or full disk is out of reach, by a real ``ulimit -f``
in a subprocess) and the non-UTF-8 path through the real ``main``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load, save

from vaekit import VAEConfig, build_vae
from vaekit.cli import main
from vaekit.data.idx import read_idx
from vaekit.data.images import read_image_folder
from vaekit.data.numpy_files import read_npz
from vaekit.errors import CheckpointError, ConfigError, DataError
from vaekit.store import model_files
from vaekit.store.checkpoint import capture_rng, load_training_state, save_training_state
from vaekit.store.model_files import load_model, save_model
from vaekit.store.weights import load_state_strict, load_weights, read_header

TINY = ["--data", "digits", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--no-progress", "--no-figures",
        "--importance-samples", "5"]


# --------------------------------------------------------------------------- crafted checkpoints


def _training_objects() -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    return model, optimizer, scheduler


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A checkpoint after one Adam step: its stem."""
    model, optimizer, scheduler = _training_objects()
    model(torch.randn(5, 3)).square().sum().backward()
    optimizer.step()
    scheduler.step()
    stem = tmp_path / "ck" / "last"
    save_training_state(stem, model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, step=1,
                        rng=capture_rng(), extra={"best_val_elbo": -1.5, "history": [{"epoch": 1}]})
    return stem


def _tamper(stem: Path, *, tensors: Callable[[dict], None] | None = None,
            doc: Callable[[dict], None] | None = None) -> None:
    """Edit a checkpoint's tensors and JSON, then write the new sha256 into the JSON, as anyone can."""
    st, js = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if tensors is not None:
        loaded = load(st.read_bytes())
        tensors(loaded)
        st.write_bytes(save(loaded))
    document = json.loads(js.read_text())
    if doc is not None:
        doc(document)
    document["sha256"] = hashlib.sha256(st.read_bytes()).hexdigest()
    js.write_text(json.dumps(document))


def _load(stem: Path) -> dict[str, Any]:
    return load_training_state(stem, *_training_objects())


def _set(key: str, value: Any) -> Callable[[dict], None]:
    return lambda d: d.__setitem__(key, value)


def _group(key: str, value: Any) -> Callable[[dict], None]:
    return lambda doc: doc["optimizer"]["param_groups"][0].__setitem__(key, value)


TAMPERINGS: dict[str, tuple[dict[str, Callable[[dict], None]], str]] = {
    "exp_avg-wrong-size": ({"tensors": _set("optim.state.0.exp_avg", torch.zeros(3))},
                           r"last\.safetensors: tensor optim\.state\.0\.exp_avg is a float32 tensor of shape \[3\], "
                           r"expected a float32 tensor of shape \[4, 3\]"),
    "exp_avg_sq-too-large": ({"tensors": _set("optim.state.2.exp_avg_sq", torch.zeros(1000, 1000))},
                             r"optim\.state\.2\.exp_avg_sq is a float32 tensor of shape \[1000, 1000\]"),
    "exp_avg-float64": ({"tensors": _set("optim.state.1.exp_avg", torch.zeros(4, dtype=torch.float64))},
                        r"optim\.state\.1\.exp_avg is a float64 tensor"),
    "exp_avg-nan": ({"tensors": lambda t: t["optim.state.0.exp_avg"].fill_(float("nan"))},
                    r"optim\.state\.0\.exp_avg holds non-finite values"),
    "exp_avg_sq-negative": ({"tensors": lambda t: t["optim.state.0.exp_avg_sq"].fill_(-1.0)},
                            r"optim\.state\.0\.exp_avg_sq holds negative values"),
    "step-shape": ({"tensors": _set("optim.state.3.step", torch.zeros(5))}, r"optim\.state\.3\.step is .* shape \[5\]"),
    "step-negative": ({"tensors": _set("optim.state.3.step", torch.tensor(-2.0))},
                      r"optim\.state\.3\.step holds negative"),
    "step-bool": ({"tensors": _set("optim.state.3.step", torch.tensor(True))}, r"optim\.state\.3\.step is a bool"),
    "model-nan": ({"tensors": lambda t: t["model.0.weight"].fill_(float("inf"))},
                  r"last\.safetensors: tensor '0\.weight' holds 12 non-finite values"),
    "model-int": ({"tensors": lambda t: t.__setitem__("model.0.bias", t["model.0.bias"].to(torch.int64))},
                  r"tensor '0\.bias' is int64, the model needs float32"),
    "state-of-no-parameter": ({"doc": lambda doc: doc["optimizer"]["state"]["__dict__"][0].__setitem__(0, 99)},
                              r"last\.json: optimizer\.state\[99\] belongs to no parameter"),
    "params-too-few": ({"doc": _group("params", [0, 1])}, r"param_groups\[0\]\.params does not list .* 4 parameters"),
    "params-twice": ({"doc": _group("params", [0, 1, 1, 2])}, r"param_groups\[0\]\.params names parameter 1 twice"),
    "lr-word": ({"doc": _group("lr", "x")}, r"last\.json: optimizer\.param_groups\[0\]\.lr is str 'x', expected a "
                                           r"finite number"),
    "lr-negative": ({"doc": _group("lr", -1.0)}, r"param_groups\[0\]\.lr is -1\.0, expected a number >= 0"),
    "lr-list": ({"doc": _group("lr", [1, 2])}, r"param_groups\[0\]\.lr is list"),
    "betas-out-of-range": ({"doc": _group("betas", {"__tuple__": [0.9, 1.5]})}, r"betas is \[0\.9, 1\.5\]"),
    "betas-short": ({"doc": _group("betas", {"__tuple__": [0.9]})}, r"betas is tuple \(0\.9,\), expected a list of 2"),
    "amsgrad-number": ({"doc": _group("amsgrad", 1)}, r"amsgrad is int 1, expected true, false or null"),
    "unknown-group-key-container": ({"doc": _group("novel", [1, 2])}, r"novel is list \[1, 2\], which this torch"),
    "groups-two": ({"doc": lambda doc: doc["optimizer"]["param_groups"].append({})},
                   r"optimizer state has 2 parameter groups, the optimizer 1"),
    "scheduler-word": ({"doc": lambda doc: doc["scheduler"].__setitem__("last_epoch", "x")},
                       r"scheduler\.last_epoch is str 'x'"),
    "scheduler-new-attribute": ({"doc": lambda doc: doc["scheduler"].__setitem__("optimizer", [1])},
                                r"scheduler\.optimizer is list"),
    "rng-torch-wrong-size": ({"tensors": _set("rng.torch", torch.zeros(7, dtype=torch.uint8))},
                             r"rng\.torch is not a valid generator state"),
    "rng-python": ({"doc": lambda doc: doc["rng"].__setitem__("python", [1, 2])}, r"rng\.python is not a valid"),
    "epoch-negative": ({"doc": _set("epoch", -5)}, r"last\.json: epoch is -5, expected an integer >= 0"),
    "step-word": ({"doc": _set("step", "3")}, r"step is '3', expected an integer >= 0"),
    "extra-list": ({"doc": _set("extra", [1])}, r"extra is list \[1\], expected an object"),
    "deeply-nested": ({"doc": _set("extra", json.loads("[" * 900 + "]" * 900))}, r"malformed checkpoint|nested"),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_a_tampered_checkpoint_is_refused_before_torch_reads_it(name: str, checkpoint: Path) -> None:
    edits, pattern = TAMPERINGS[name]
    _tamper(checkpoint, **edits)
    with pytest.raises(CheckpointError, match=pattern) as info:
        _load(checkpoint)
    assert "\n" not in str(info.value)


def test_an_untampered_checkpoint_still_loads(checkpoint: Path) -> None:
    _tamper(checkpoint)                          # rewrites the JSON only
    state = _load(checkpoint)
    assert state["epoch"] == 1 and state["extra"]["best_val_elbo"] == -1.5
    assert state["extra"] == {"best_val_elbo": -1.5, "history": [{"epoch": 1}]}


def test_a_key_missing_from_extra_is_an_error_naming_the_file(checkpoint: Path) -> None:
    _tamper(checkpoint, doc=lambda doc: doc["extra"].pop("best_val_elbo"))
    extra = _load(checkpoint)["extra"]
    assert extra.get("best_val_elbo") is None and "best_val_elbo" not in extra
    with pytest.raises(CheckpointError, match=r"last\.json: malformed checkpoint \(no extra\.best_val_elbo\)"):
        extra["best_val_elbo"]
    with pytest.raises(KeyError):               # still a KeyError for code that expects one
        extra["history"][0]["loss"]
    with pytest.raises(CheckpointError, match=r"no extra\.history\.0\.loss"):
        extra["history"][0]["loss"]


# --------------------------------------------------------------------------- weights files


def test_weights_of_another_kind_or_not_finite_are_refused(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    good = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = tmp_path / "w.safetensors"
    for state, pattern in (({**good, "weight": good["weight"].to(torch.int32)}, r"'weight' is int32, the model needs"),
                           ({**good, "bias": good["bias"] > 0}, r"'bias' is bool, the model needs float32"),
                           ({**good, "bias": torch.tensor([0.0, float("nan")])}, r"'bias' holds 1 non-finite value ")):
        with pytest.raises(CheckpointError, match=pattern):
            load_state_strict(model, state, path, "the layer")
    load_state_strict(model, {**good, "weight": good["weight"].double()}, path, "the layer")  # a float is a float


def test_the_header_is_read_without_decoding_and_checked(tmp_path: Path) -> None:
    data = save({"a": torch.zeros(2, 3), "b": torch.zeros(5, dtype=torch.int64)})
    assert read_header(data, "w") == {"a": ("F32", (2, 3)), "b": ("I64", (5,))}
    for bad, pattern in ((data[:5], "too short"), ((10**9).to_bytes(8, "little") + data[8:], "header claims"),
                         (len(b"[1]").to_bytes(8, "little") + b"[1]", "not a JSON object"),
                         (len(b"{nope").to_bytes(8, "little") + b"{nope", "not valid JSON")):
        with pytest.raises(CheckpointError, match=pattern):
            read_header(bad, "w.safetensors")


def _saved_model(directory: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("decoder_variance", 1.0)       # a fixed c: one buffer (the default, optimal, has two)
    model = build_vae(VAEConfig((1, 4, 4), latent_dim=2, hidden=(8,), **kwargs))
    return save_model(model, directory)


def test_a_config_describing_a_huge_model_is_refused_without_building_it(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    run = _saved_model(tmp_path / "m")
    doc = json.loads((run / "config.json").read_text())
    doc["model"]["latent_dim"] = 5_000_000          # 2 x 8 x 5e6 float32 values, 320 MB, for 2 x 8 in the file
    (run / "config.json").write_text(json.dumps(doc))
    devices: list[str] = []
    real_build = model_files.build_vae

    def spy(config: VAEConfig, **kwargs: Any):
        devices.append(torch.get_default_device().type)
        return real_build(config, **kwargs)

    monkeypatch.setattr(model_files, "build_vae", spy)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights do not match the model in config\.json "
                                              r"\(size mismatch for encoder\.mean\.weight: the weights have shape "
                                              r"\[2, 8\], the configuration needs \[5000000, 8\]\)"):
        load_model(run)
    assert devices == ["meta"]                      # the real build never happened


def test_a_tensor_the_weights_lack_is_refused_by_its_count(tmp_path: Path) -> None:
    run = _saved_model(tmp_path / "m")              # a fixed c: one buffer, c
    doc = json.loads((run / "config.json").read_text())
    doc["model"]["decoder_variance"] = "optimal"    # two buffers the weights do not have: running_c, num_updates
    (run / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"the configuration needs [\d,]+ values in \d+ tensors, the weights "
                                              r"hold [\d,]+ in \d+\)"):
        load_model(run)


def test_models_that_cannot_be_built_on_meta_still_load(tmp_path: Path) -> None:
    run = _saved_model(tmp_path / "m", decoder_variance="learned-per-dim")   # checks its initial values
    model = load_model(run)
    assert model.config.decoder_variance == "learned-per-dim"


# --------------------------------------------------------------------------- config.json types


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"data_shape": [float("nan")]}, r"data_shape: expected a list of sizes \(integers\), got \[nan\]"),
    ({"data_shape": [float("inf")]}, r"data_shape: expected a list of sizes \(integers\)"),
    ({"data_shape": [1, 8, 8.5]}, r"data_shape: .*8\.5"),
    ({"data_shape": "18"}, r"data_shape: expected a list of sizes, got '18'"),
    ({"data_shape": [True, 8]}, r"data_shape: .*True"),
    ({"data_shape": [2**31]}, r"data_shape: every size must be an integer from 1 to 2147483647"),
    ({"data_shape": [2**20, 2**20]}, r"data_shape: .* more than 2147483647"),
    ({"latent_dim": 2**40}, r"latent_dim: must be an integer from 1 to 2147483647"),
    ({"initial_variance": "1"}, r"initial_variance: must be a finite number > 0, got '1'"),
    ({"hidden": 5}, r"hidden: expected a list of widths, got 5"),
    ({"hidden": ["a"]}, r"hidden: expected a list of widths \(integers\), got \['a'\]"),
    ({"hidden": "32"}, r"hidden: expected a list of widths, got '32'"),
    ({"hidden": [8.0]}, r"hidden: .*8\.0"),
    ({"activation": ["tanh"]}, r"activation: unknown \['tanh'\]"),
    ({"arch_args": [1]}, r"arch_args: expected a JSON object"),
    ({"likelihood": ["gaussian"]}, r"likelihood: unknown"),
])
def test_wrong_types_in_a_configuration_are_refused_not_converted(kwargs: dict, pattern: str) -> None:
    d = {"data_shape": [1, 8, 8], "latent_dim": 2, "arch_args": {"hidden": [8]}, **kwargs}
    for key in ("hidden", "activation"):
        if key in kwargs:
            d["arch_args"] = {"hidden": [8], key: kwargs[key]}
            del d[key]
    with pytest.raises(ConfigError, match=pattern):
        VAEConfig.from_dict(d)


def test_sizes_may_be_numpy_integers_and_tuples() -> None:
    config = VAEConfig(np.array([1, 8, 8]), latent_dim=2, hidden=(np.int64(8), 4))
    assert config.data_shape == (1, 8, 8) and config.arch_args["hidden"] == [8, 4]


# --------------------------------------------------------------------------- memory bombs in data files


def _deflated_zeros(header: bytes, mib: int, wrap: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, wrap)
    block = bytes(1 << 20)
    return b"".join([z.compress(header), *(z.compress(block) for _ in range(mib))]) + z.flush()


def _peak_bytes(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        fn()
    except DataError:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_a_gzip_bomb_idx_is_refused_after_reading_its_declared_size(tmp_path: Path) -> None:
    header = bytes([0, 0, 0x08, 3]) + np.asarray((10, 8, 8), dtype=">u4").tobytes()
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(_deflated_zeros(header, 256, 31))           # 256 MiB inflated, 250 KB on disk
    with pytest.raises(DataError, match=r"need 656 bytes, decompressed file has more"):
        read_idx(path)
    assert _peak_bytes(lambda: read_idx(path)) < 4 << 20


def test_a_raw_idx_is_compared_with_its_header_before_reading(tmp_path: Path) -> None:
    header = bytes([0, 0, 0x0D, 2]) + np.asarray((60000, 60000), dtype=">u4").tobytes()
    (tmp_path / "big.idx").write_bytes(header + bytes(100))     # declares 14 GB
    with pytest.raises(DataError, match=r"need 14400000012 bytes, file has 112"):
        read_idx(tmp_path / "big.idx")


def test_an_idx_in_big_endian_float_is_read_in_native_order(tmp_path: Path) -> None:
    x = np.linspace(-1, 1, 24, dtype=np.float64).reshape(2, 3, 4)
    header = bytes([0, 0, 0x0E, 3]) + np.asarray(x.shape, dtype=">u4").tobytes()
    (tmp_path / "x.idx.gz").write_bytes(zlib.compress(header + x.astype(">f8").tobytes(), wbits=31))
    y, _ = read_idx(tmp_path / "x.idx.gz")
    assert y.dtype == np.float64 and y.dtype.byteorder in ("=", "<") and np.array_equal(y, x)


def _npy_member(array: np.ndarray, tail: int = 0, claim: tuple[int, ...] | None = None) -> bytes:
    buf = io.BytesIO()
    if claim is None:
        np.lib.format.write_array(buf, array)
    else:
        np.lib.format.write_array_header_1_0(buf, {"descr": array.dtype.str, "fortran_order": False, "shape": claim})
        buf.write(array.tobytes())
    return buf.getvalue() + bytes(tail)


def test_a_zip_bomb_npz_is_refused_from_its_headers(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", _npy_member(np.zeros(10, np.uint8), tail=64 << 20))
    with pytest.raises(DataError, match=r"bomb\.npz: member 'x' declares a uint8 array of shape \(10,\) \(138 bytes "
                                        rf"with its header\) but holds {138 + (64 << 20)} bytes"):
        read_npz(tmp_path / "bomb.npz")
    with zipfile.ZipFile(tmp_path / "claim.npz", "w") as archive:
        archive.writestr("x.npy", _npy_member(np.zeros(4), claim=(10**6, 10**6)))
    assert _peak_bytes(lambda: read_npz(tmp_path / "claim.npz")) < 4 << 20
    with pytest.raises(DataError, match=r"declares a float64 array of shape \(1000000, 1000000\)"):
        read_npz(tmp_path / "claim.npz")


def test_a_good_npz_still_loads(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "ok.npz", x=np.ones((5, 3), np.float32), y=np.arange(5))
    x, y = read_npz(tmp_path / "ok.npz")
    assert x.shape == (5, 3) and y is not None and list(y) == [0, 1, 2, 3, 4]


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20_000, 15_000])    # beyond twice Pillow's limit (an error), and between (a warning)
def test_a_decompression_bomb_image_is_refused(tmp_path: Path, side: int) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "big.png").write_bytes(_png_header(side, side))
    with pytest.raises(DataError, match=rf"big\.png: image refused, too large to decode .*{side * side} pixels"):
        read_image_folder(folder)


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained by the real ``main`` in this process."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize(("patched", "code", "reason"), [
    ("replace", errno.EROFS, "read-only file system"),
    ("fsync", errno.ENOSPC, "no space left on the device"),
    ("replace", errno.EDQUOT, "disk quota exceeded"),
])
def test_a_failing_write_is_one_line_naming_the_file(run_dir: Path, tmp_path: Path, capsys, monkeypatch,
                                                    patched: str, code: int, reason: str) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, patched, fail)
    out = tmp_path / "samples.npy"
    assert main(["sample", str(run_dir), "--n", "4", "--out", str(out)]) == 2
    assert _one_line(capsys) == f"vaekit sample: error: {out}: {reason}"
    assert list(tmp_path.iterdir()) == []           # no temporary file left behind


_LIMITED = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
            "os.execv(sys.executable, [sys.executable, '-m', 'vaekit', *sys.argv[1:]])")


def test_a_file_size_limit_is_one_line_naming_the_file(run_dir: Path, tmp_path: Path) -> None:
    # ulimit -f of 4 KiB with SIGXFSZ ignored (both survive exec): a larger write fails with EFBIG
    env = {**os.environ, "PYTHONWARNINGS": "error", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", _LIMITED, "sample", str(run_dir), "--n", "64", "--out", "s.npy"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "vaekit sample: error: s.npy: file too large (the file-size limit, ulimit -f, was reached)\n"
    assert list(tmp_path.iterdir()) == []


def test_an_allocation_failure_in_torch_is_out_of_memory(run_dir: Path, capsys, monkeypatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 40000000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(torch.nn.Module, "to", fail)
    assert main(["sample", str(run_dir), "--n", "4", "--out", "unused.npy"]) == 2
    assert _one_line(capsys) == "vaekit sample: error: out of memory (tried to allocate 40.0 TB)"


def test_out_naming_a_file_below_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    assert main(["train", *TINY, "--out", str(tmp_path / "afile" / "run")]) == 2
    line = _one_line(capsys)
    assert "afile" in line and "directory" in line.lower()


def test_a_run_directory_whose_name_is_not_utf8_is_readable(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/run\xff")      # "run\udcff": a surrogate-escaped byte
    shutil.copytree(run_dir, out)
    assert main(["evaluate", out, "--importance-samples", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] > 0
    assert main(["train", "--out", out, "--resume", "--epochs", "2", "--no-progress", "--no-figures",
                 "--importance-samples", "5"]) == 0                  # reads the checkpoint, trains, writes
    assert main(["sample", out, "--n", "4", "--out", os.path.join(out, "s.npy")]) == 0
    assert load_weights(Path(out) / "model.safetensors")
    assert sorted(os.listdir(os.fsencode(str(tmp_path)))) == [b"run\xff"]


def test_an_unencodable_name_is_printed_escaped(tmp_path: Path) -> None:
    start = time.perf_counter()
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "PYTHONWARNINGS": "error"}
    proc = subprocess.run([sys.executable, "-c", "import sys; from vaekit.cli import _lenient_output; "
                           "_lenient_output(); print('run\\udcff')"], capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout == b"run\\udcff\n", proc.stderr
    assert time.perf_counter() - start < 30


def test_deeply_nested_arch_args_and_evaluation_json_are_one_line(tmp_path):
    """--arch-args and RUN/evaluation-SPLIT.json nested too deeply for Python's parser: exit 2, one line
    (not a RecursionError traceback)."""
    import subprocess
    import sys

    deep = "[" * 20_000 + "]" * 20_000            # beyond the parser's recursion limit, within ARG_MAX
    proc = subprocess.run([sys.executable, "-m", "vaekit", "train", "--arch-args", deep, "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-500:]
    assert "nested too deeply" in proc.stderr and not (tmp_path / "r").exists()
    run = tmp_path / "run"
    ok = subprocess.run([sys.executable, "-m", "vaekit", "train", "--epochs", "1", "--hidden", "8", "--latent-dim", "2",
                         "--no-figures", "--no-progress", "--importance-samples", "5", "--out", str(run)],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    (run / "evaluation-val.json").write_text(deep)
    proc = subprocess.run([sys.executable, "-m", "vaekit", "figures", str(run)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-500:]
    assert "evaluation-val.json" in proc.stderr and "nested too deeply" in proc.stderr
