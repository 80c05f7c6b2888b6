"""A catalogue of malformed inputs, each given to the real command line (``python -m vaekit ...``).

For every case the contract of :mod:`vaekit.cli` must hold end to end: exit code 2, exactly one
non-empty line on stderr that names the offending file or option and the problem, no traceback,
and no file that existed before the command was modified or deleted (nor any new file left
behind: a failed command writes nothing).

Each case runs in a folder of its own (its working directory, so the paths in the messages are
short); cases that need a run directory get a private copy of one tiny run trained once per module
with a real ``vaekit train``. The subprocesses are independent, so a module fixture runs them all
a few at a time and caches the results.

``python tests/test_bad_inputs.py`` runs the catalogue and prints it as the Markdown table of
docs/bad-inputs.md (with ``--write`` it replaces that file).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad-inputs.md"
TINY = ("--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--no-progress", "--no-figures",
        "--importance-samples", "5")


def _train(*extra: str, data: str = "digits") -> tuple[str, ...]:
    """``vaekit train`` with the tiny options, writing to ./out; ``extra`` options come last and win."""
    return ("train", "--data", data, *TINY, "--out", "out", *extra)


def _evaluate(*extra: str) -> tuple[str, ...]:
    return ("evaluate", "run", "--importance-samples", "5", *extra)


# --------------------------------------------------------------------------- file makers


def _idx_bytes(x: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, x.ndim]) + np.asarray(x.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(x, dtype=np.uint8).tobytes()


def _images(n: int = 12, shape: tuple[int, ...] = (8, 8)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _write(name: str, content: bytes | str) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        (d / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return make


def _npy(name: str, array: np.ndarray) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        np.save(d / name, array, allow_pickle=False)
    return make


def _folder(name: str, images: list[tuple[str, str, tuple[int, int]]]) -> Callable[[Path], None]:
    """A folder of images (file name, PIL mode, (width, height))."""
    def make(d: Path) -> None:
        (d / name).mkdir()
        for i, (file, mode, size) in enumerate(images):
            Image.new(mode, size, color=(i * 20) if mode in ("L", "1") else (i * 20, 10, 200)).save(d / name / file)
    return make


def _empty_folder(d: Path) -> None:
    (d / "empty").mkdir()
    (d / "empty" / "notes.txt").write_text("no images here\n")


def _truncated_gz(d: Path) -> None:
    data = gzip.compress(_idx_bytes(_images(40)))
    (d / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])


def _corrupt_gz(d: Path) -> None:
    data = bytearray(gzip.compress(_idx_bytes(_images(40))))
    data[10:40] = b"\xff" * 30                                   # keep the gzip magic, wreck the stream
    (d / "images-idx3-ubyte.gz").write_bytes(bytes(data))


def _bad_magic(d: Path) -> None:
    (d / "images.idx").write_bytes(b"\x08\x03\x00\x00" + _idx_bytes(_images(4))[4:])


def _dims_mismatch(d: Path) -> None:
    data = _idx_bytes(_images(10))
    (d / "images-idx3-ubyte").write_bytes(data[:16] + data[16:][:-64])   # says 10x8x8, holds 9 images


def _nan_npy(d: Path) -> None:
    x = np.random.default_rng(0).normal(size=(20, 4))
    x[3, 1] = np.nan
    np.save(d / "nan.npy", x)


def _inf_npy(d: Path) -> None:
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    x[5, 0] = np.inf
    np.save(d / "inf.npy", x)


def _csv(rows: list[str]) -> str:
    return "".join(row + "\n" for row in rows)


_GOOD_ROWS = [f"{i * 0.1:.1f},{i % 3},{(i * 7) % 5}" for i in range(12)]


def _run(d: Path) -> None:
    """Nothing beyond the run copy (made by the fixture)."""


def _other_model_weights(d: Path) -> None:
    from vaekit import VAEConfig, build_vae
    from vaekit.store.weights import save_weights

    model = build_vae(VAEConfig((1, 8, 8), latent_dim=3, hidden=(8,), decoder_variance="optimal"))
    save_weights(model.state_dict(), d / "run" / "model.safetensors")


def _newer_format(d: Path) -> None:
    path = d / "run" / "config.json"
    doc = json.loads(path.read_text())
    doc["format_version"] = 99
    path.write_text(json.dumps(doc))


def _pickled_weights(d: Path) -> None:
    from vaekit.store.weights import load_weights

    state = load_weights(d / "run" / "model.safetensors")
    (d / "run" / "model.safetensors").unlink()
    torch.save(state, d / "run" / "model.safetensors")          # a pickle (zip) under the safetensors name


# --------------------------------------------------------------------------- hostile files (issue 14)


def _edit_json(relative: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """Edit the JSON file ``run/relative`` in place."""
    def make(d: Path) -> None:
        path = d / "run" / relative
        doc = json.loads(path.read_text())
        edit(doc)
        path.write_text(json.dumps(doc))
    return make


def _model_key(key: str, value: object) -> Callable[[Path], None]:
    return _edit_json("config.json", lambda doc: doc["model"].__setitem__(key, value))


def _arch_arg(key: str, value: object) -> Callable[[Path], None]:
    return _edit_json("config.json", lambda doc: doc["model"]["arch_args"].__setitem__(key, value))


def _checkpoint_tensors(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """Edit the tensors of run/checkpoints/last.safetensors and put their sha256 in last.json, as
    anyone can: the hash detects corruption, not tampering."""
    def make(d: Path) -> None:
        from safetensors.torch import load, save

        weights, doc_path = d / "run" / "checkpoints" / "last.safetensors", d / "run" / "checkpoints" / "last.json"
        tensors = load(weights.read_bytes())
        edit(tensors)
        weights.write_bytes(save(tensors))
        doc = json.loads(doc_path.read_text())
        doc["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        doc_path.write_text(json.dumps(doc))
    return make


def _model_weights(edit: Callable[[dict], dict]) -> Callable[[Path], None]:
    """Replace run/model.safetensors by ``edit`` of its tensors."""
    def make(d: Path) -> None:
        from safetensors.torch import load, save

        path = d / "run" / "model.safetensors"
        path.write_bytes(save(edit(load(path.read_bytes()))))
    return make


def _nan_first(tensors: dict) -> dict:
    tensors[sorted(tensors)[0]][...] = float("nan")
    return tensors


_DEEP_JSON = "[" * 100_000 + "]" * 100_000


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels (its one IDAT is a stub: Pillow refuses the
    size when it opens the file, before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def _zeros_deflated(header: bytes, zeros: int, wrap: int) -> bytes:
    """``header`` and ``zeros`` zero bytes, deflated in a stream (``wrap``: 31 gzip, -15 raw)."""
    z = zlib.compressobj(9, zlib.DEFLATED, wrap)
    block = bytes(1 << 20)
    parts = [z.compress(header)] + [z.compress(block) for _ in range(zeros >> 20)]
    return b"".join(parts) + z.flush()


def _gzip_bomb(d: Path) -> None:
    """An IDX header for 10 8x8 images, then 64 MiB of zeros: 64 KB of gzip."""
    header = bytes([0, 0, 0x08, 3]) + np.asarray((10, 8, 8), dtype=">u4").tobytes()
    (d / "bomb-idx3-ubyte.gz").write_bytes(_zeros_deflated(header, 64 << 20, 31))


def _zip_bomb(d: Path) -> None:
    """A .npz whose member x.npy declares 10 bytes of data and inflates to 64 MiB."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(10, dtype=np.uint8))
    header = buf.getvalue()[:-10]
    with zipfile.ZipFile(d / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", header + bytes(64 << 20))


def _big_image(d: Path) -> None:
    _folder("imgs", [("a.png", "L", (8, 8))])(d)
    (d / "imgs" / "b.png").write_bytes(_png_header(20_000, 20_000))


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Case:
    """One malformed input: the command, what must appear in its error line, and how to make the files."""

    id: str
    what: str
    args: tuple[str, ...]
    mentions: tuple[str, ...]
    setup: Callable[[Path], None] | None = None
    run: bool = False                       # give the case a copy of the trained run as ./run


_RESUME = ("train", "--resume", "--out", "run", "--epochs", "2", "--no-progress", "--no-figures")


def _duplicate_model_key(d: Path) -> None:
    """The run's config.json with "latent_dim" given twice in its model (the second value wins in Python's json)."""
    path = d / "run" / "config.json"
    text = path.read_text()
    start = text.index('"model": {') + len('"model": {')
    path.write_text(text[:start] + ' "latent_dim": 9,' + text[start:])

CASES: tuple[Case, ...] = (
    # IDX files
    Case("idx-truncated-gz", "IDX file, .gz cut in half", _train(data="train-images-idx3-ubyte.gz"),
         ("train-images-idx3-ubyte.gz", "truncated"), _truncated_gz),
    Case("idx-corrupt-gz", "IDX file, corrupt gzip stream", _train(data="images-idx3-ubyte.gz"),
         ("images-idx3-ubyte.gz", "corrupt gzip"), _corrupt_gz),
    Case("idx-bad-magic", "IDX file with a wrong magic number", _train(data="images.idx"),
         ("images.idx", "magic"), _bad_magic),
    Case("idx-dims-mismatch", "IDX header dimensions do not match the file size",
         _train(data="images-idx3-ubyte"), ("images-idx3-ubyte", "dimensions", "bytes"), _dims_mismatch),
    # numpy files
    Case("npy-empty", "empty .npy file", _train(data="empty.npy"), ("empty.npy", "empty"),
         _write("empty.npy", b"")),
    Case("npy-garbage", ".npy file that is not numpy", _train(data="garbage.npy"),
         ("garbage.npy", "not a readable .npy"), _write("garbage.npy", "hello, world\n")),
    Case("npy-nan", "NaN in a .npy file", _train(data="nan.npy"), ("nan.npy", "non-finite"), _nan_npy),
    Case("npy-inf", "Inf in a .npy file", _train(data="inf.npy"), ("inf.npy", "non-finite"), _inf_npy),
    # CSV files
    Case("csv-empty", "empty .csv file", _train(data="empty.csv"), ("empty.csv", "empty"),
         _write("empty.csv", b"")),
    Case("csv-nan", "NaN cell in a .csv file", _train(data="nan.csv"), ("nan.csv", "non-finite"),
         _write("nan.csv", _csv(["a,b,c", *_GOOD_ROWS[:5], "0.5,nan,1", *_GOOD_ROWS[5:]]))),
    Case("csv-non-numeric", "non-numeric cell in a .csv file", _train(data="words.csv"),
         ("words.csv", "row 5", "banana"),
         _write("words.csv", _csv(["a,b,c", *_GOOD_ROWS[:3], "0.5,banana,1", *_GOOD_ROWS[3:]]))),
    Case("csv-ragged", "ragged rows in a .csv file", _train(data="ragged.csv"),
         ("ragged.csv", "row 4", "columns"),
         _write("ragged.csv", _csv([*_GOOD_ROWS[:3], "1,2", *_GOOD_ROWS[3:]]))),
    Case("csv-bernoulli-range", "bernoulli likelihood, tabular data outside [0, 1]",
         _train("--likelihood", "bernoulli", data="wide.csv"), ("wide.csv", "bernoulli", "[0, 1]"),
         _write("wide.csv", _csv(["a,b,c", *_GOOD_ROWS]))),
    # image folders
    Case("images-mixed-sizes", "folder of images of different sizes", _train(data="imgs"),
         ("b.png", "size", "a.png"), _folder("imgs", [("a.png", "L", (8, 8)), ("b.png", "L", (9, 8)),
                                                     ("c.png", "L", (8, 8))])),
    Case("images-mixed-modes", "folder mixing grayscale and RGB images", _train(data="imgs"),
         ("b.png", "mode", "a.png"), _folder("imgs", [("a.png", "L", (8, 8)), ("b.png", "RGB", (8, 8)),
                                                     ("c.png", "L", (8, 8))])),
    Case("images-corrupt", "folder with a corrupt .png", _train(data="imgs"), ("b.png", "cannot read image"),
         lambda d: (_folder("imgs", [("a.png", "L", (8, 8)), ("c.png", "L", (8, 8))])(d),
                    (d / "imgs" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really"))),
    Case("images-none", "folder with no images", _train(data="empty"), ("empty", "no image files"),
         _empty_folder),
    # data specs
    Case("data-unknown", "unknown data spec", _train(data="cifar-1000"), ("cifar-1000", "neither a known dataset")),
    Case("data-suffix", "file of an unsupported type", _train(data="notes.txt"),
         ("notes.txt", "unsupported file type"), _write("notes.txt", "1,2,3\n")),
    Case("mnist-missing", "--data mnist, files not in --data-dir (no --download)",
         _train("--data-dir", "nothing-here", data="mnist"), ("mnist", "missing", "nothing-here", "--download"),
         lambda d: (d / "nothing-here").mkdir()),
    # train options
    Case("latent-dim-0", "--latent-dim 0", _train("--latent-dim", "0"), ("--latent-dim", "'0'")),
    Case("latent-dim-negative", "--latent-dim -3", _train("--latent-dim", "-3"), ("--latent-dim", "'-3'")),
    Case("batch-size-0", "--batch-size 0", _train("--batch-size", "0"), ("--batch-size", "'0'")),
    Case("epochs-0", "--epochs 0", _train("--epochs", "0"), ("--epochs", "'0'")),
    Case("hidden-0", "--hidden 0,5", _train("--hidden", "0,5"), ("--hidden", "'0,5'")),
    Case("decoder-variance-0", "--decoder-variance 0", _train("--decoder-variance", "0"),
         ("--decoder-variance", "'0'")),
    Case("decoder-variance-negative", "--decoder-variance -1", _train("--decoder-variance", "-1"),
         ("--decoder-variance", "'-1'")),
    Case("decoder-variance-word", "--decoder-variance banana", _train("--decoder-variance", "banana"),
         ("--decoder-variance", "'banana'")),
    Case("val-fraction", "--val-fraction 1.5", _train("--val-fraction", "1.5"), ("--val-fraction", "'1.5'")),
    Case("lr-negative", "--lr -1", _train("--lr", "-1"), ("--lr", "'-1'")),
    Case("device-unknown", "--device banana", _train("--device", "banana"), ("--device", "'banana'")),
    Case("arch-unknown", "--arch transformer", _train("--arch", "transformer"),
         ("--arch", "'transformer'", "MODULE:FUNCTION")),
    Case("arch-not-module-function", "--arch nets.py: (no function name)", _train("--arch", "nets.py:"),
         ("--arch", "nets.py:", "MODULE:FUNCTION")),
    Case("arch-untrusted", "--arch MODULE:FUNCTION without --trust-code", _train("--arch", "nets.py:build"),
         ("--arch nets.py:build", "--trust-code"), _write("nets.py", "open('imported', 'w').close()\n")),
    Case("arch-missing-module", "--arch naming a file that does not exist",
         ("train", "--data", "digits", "--epochs", "1", "--latent-dim", "2", "--no-progress", "--no-figures",
          "--out", "out", "--arch", "missing.py:build", "--trust-code"), ("missing.py", "does not exist")),
    Case("arch-args-not-json", "--arch-args that is not JSON", _train("--arch-args", "{width: 4}"),
         ("--arch-args", "not valid JSON")),
    Case("arch-args-unknown", "--arch-args with a key the architecture does not take",
         _train("--arch-args", '{"depth": 3}'), ("--arch-args", "'depth'", "mlp")),
    Case("hidden-other-arch", "--hidden with --arch linear", _train("--arch", "linear"),
         ("--hidden", "--arch mlp", "--arch-args")),
    Case("standardize-word", "--standardize banana", _train("--standardize", "banana"),
         ("--standardize", "'banana'", "columns")),
    Case("test-data-width", "--test-data whose rows are wider than the training table's",
         _train("--test-data", "wide.npy", data="table.csv"), ("--test-data wide.npy", "(5,)", "(3,)"),
         lambda d: (_write("table.csv", _csv(["a,b,c", *_GOOD_ROWS]))(d),
                    _npy("wide.npy", np.random.default_rng(0).random((20, 5)))(d))),
    Case("test-data-test-fraction", "--test-data with --test-fraction",
         _train("--test-data", "test.npy", "--test-fraction", "0.2"), ("--test-fraction", "--test-data test.npy")),
    Case("unknown-option", "unknown option", _train("--frobnicate"), ("--frobnicate", "unrecognized")),
    Case("config-unknown-key", "--config with an unknown key", _train("--config", "cfg.json"),
         ("cfg.json", "unknown key", "'latent_dims'"), _write("cfg.json", '{"latent_dims": 2}')),
    Case("config-not-json", "--config file that is not JSON", _train("--config", "cfg.json"),
         ("cfg.json", "not valid JSON"), _write("cfg.json", "latent_dim = 2\n")),
    Case("config-bad-value", "--config with an impossible value", _train("--config", "cfg.json"),
         ("cfg.json", "batch_size", "'0'"), _write("cfg.json", '{"batch_size": 0}')),
    Case("config-trust-code", "--config that tries to opt in to running code", _train("--config", "cfg.json"),
         ("cfg.json", "trust_code", "--trust-code"),
         _write("cfg.json", '{"arch": "nets.py:build", "trust_code": true}')),
    Case("out-holds-run", "train --out an existing run without --resume", ("train", *TINY, "--out", "run"),
         ("--out run", "already holds a run", "--resume"), _run, run=True),
    Case("resume-no-run", "--resume on a folder without a run", ("train", "--resume", "--out", "nothing"),
         ("--resume", "nothing", "no config.json")),
    # run directories
    Case("evaluate-missing-dir", "evaluate a run directory that does not exist",
         ("evaluate", "no-such-run", "--importance-samples", "5"), ("no-such-run", "not found")),
    Case("evaluate-other-dims", "evaluate on data whose shape differs from the model's",
         _evaluate("--data", "other.npy"), ("other.npy", "(5,)", "(1, 8, 8)"),
         _npy("other.npy", np.random.default_rng(0).random((20, 5)).astype(np.float32)), run=True),
    Case("evaluate-split-all-no-data", "evaluate --split all without --data", _evaluate("--split", "all"),
         ("--split all", "--data"), _run, run=True),
    Case("evaluate-other-model", "config.json of another model than model.safetensors", _evaluate(),
         ("model.safetensors", "do not match", "config.json"), _other_model_weights, run=True),
    Case("evaluate-newer-format", "config.json with a newer format_version", _evaluate(),
         ("config.json", "format version 99", "upgrade"), _newer_format, run=True),
    Case("evaluate-pickle", "a pickle renamed model.safetensors", _evaluate(),
         ("model.safetensors", "not a readable safetensors file"), _pickled_weights, run=True),
    Case("evaluate-no-weights", "run directory without model.safetensors", _evaluate(),
         ("model.safetensors", "not found"), lambda d: (d / "run" / "model.safetensors").unlink(), run=True),
    Case("out-unknown-extension", "output file with an unknown extension", ("sample", "run", "--out", "s.jpg"),
         ("--out s.jpg", "'.jpg'", ".png"), _run, run=True),
    Case("out-exists", "existing output file without --force", ("sample", "run", "--out", "s.png"),
         ("--out s.png", "exists", "--force"), _write("s.png", b"keep me"), run=True),
    Case("out-exists-default", "existing default output (RUN_DIR/samples.png) without --force",
         ("sample", "run"), ("samples.png", "exists", "--force"),
         lambda d: (d / "run" / "samples.png").write_bytes(b"keep me"), run=True),
    # hostile and malformed files (issue 14)
    Case("resume-adam-wrong-size", "checkpoint with an Adam moment of the wrong size (sha256 recomputed)", _RESUME,
         ("last.safetensors", "optim.state.0.exp_avg", "shape [3]"),
         _checkpoint_tensors(lambda t: t.__setitem__("optim.state.0.exp_avg", torch.zeros(3))), run=True),
    Case("resume-adam-nan", "checkpoint with NaN in an Adam moment (sha256 recomputed)", _RESUME,
         ("last.safetensors", "optim.state.0.exp_avg_sq", "non-finite"),
         _checkpoint_tensors(lambda t: t["optim.state.0.exp_avg_sq"].fill_(float("nan"))), run=True),
    Case("resume-step-shape", "checkpoint with a step count of 5 values (sha256 recomputed)", _RESUME,
         ("last.safetensors", "optim.state.1.step", "shape [5]"),
         _checkpoint_tensors(lambda t: t.__setitem__("optim.state.1.step", torch.zeros(5))), run=True),
    Case("resume-nan-weights", "checkpoint with NaN model weights (sha256 recomputed)", _RESUME,
         ("last.safetensors", "non-finite"),
         _checkpoint_tensors(lambda t: t[sorted(k for k in t if k.startswith("model."))[0]].fill_(float("nan"))),
         run=True),
    Case("resume-no-best-val-elbo", "last.json without best_val_elbo", _RESUME, ("last.json", "best_val_elbo"),
         _edit_json("checkpoints/last.json", lambda doc: doc["extra"].pop("best_val_elbo")), run=True),
    Case("resume-negative-epoch", "last.json with epoch -5", _RESUME, ("last.json", "epoch", "-5"),
         _edit_json("checkpoints/last.json", lambda doc: doc.__setitem__("epoch", -5)), run=True),
    Case("resume-lr-word", "last.json with an optimizer learning rate \"x\"", _RESUME, ("last.json", "lr", "'x'"),
         _edit_json("checkpoints/last.json", lambda doc: doc["optimizer"]["param_groups"][0].__setitem__("lr", "x")),
         run=True),
    Case("resume-deep-json", "last.json nested 100,000 deep", _RESUME, ("last.json", "nested too deeply"),
         _write("run/checkpoints/last.json", _DEEP_JSON), run=True),
    Case("config-deep-json", "config.json nested 100,000 deep", _evaluate(), ("config.json", "nested too deeply"),
         _write("run/config.json", _DEEP_JSON), run=True),
    Case("metrics-deep-json", "metrics.jsonl with a line nested 100,000 deep", ("figures", "run"),
         ("metrics.jsonl:1", "nested too deeply"), _write("run/metrics.jsonl", _DEEP_JSON + "\n"), run=True),
    Case("config-option-file-deep-json", "--config file nested 100,000 deep", _train("--config", "cfg.json"),
         ("--config cfg.json", "nested too deeply"), _write("cfg.json", _DEEP_JSON)),
    Case("config-latent-dim-huge", "config.json with latent_dim 5,000,000 (refused before allocating)",
         ("sample", "run", "--out", "s.npy"), ("model.safetensors", "config.json", "[5000000, 8]"),
         _model_key("latent_dim", 5_000_000), run=True),
    Case("config-data-shape-nan", "config.json with data_shape [NaN]", _evaluate(), ("config.json", "data_shape"),
         _model_key("data_shape", [float("nan")]), run=True),
    Case("config-initial-variance-string", "config.json with initial_variance \"1\"", _evaluate(),
         ("config.json", "initial_variance", "'1'"), _model_key("initial_variance", "1"), run=True),
    Case("config-hidden-number", "config.json with hidden 5", _evaluate(), ("config.json", "hidden", "got 5"),
         _arch_arg("hidden", 5), run=True),
    Case("config-hidden-words", "config.json with hidden [\"a\"]", _evaluate(), ("config.json", "hidden", "['a']"),
         _arch_arg("hidden", ["a"]), run=True),
    Case("config-hidden-string", "config.json with hidden \"32\" (not (3, 2))", _evaluate(),
         ("config.json", "hidden", "'32'"), _arch_arg("hidden", "32"), run=True),
    Case("weights-nan", "model.safetensors with NaN weights", _evaluate(), ("model.safetensors", "non-finite"),
         _model_weights(_nan_first), run=True),
    Case("weights-int", "model.safetensors with integer weights", _evaluate(), ("model.safetensors", "int32"),
         _model_weights(lambda t: {k: v.to(torch.int32) for k, v in t.items()}), run=True),
    Case("weights-bool", "model.safetensors with boolean weights", _evaluate(), ("model.safetensors", "bool"),
         _model_weights(lambda t: {k: v > 0 for k, v in t.items()}), run=True),
    Case("images-bomb", "folder with a 20000x20000 PNG (a decompression bomb)", _train(data="imgs"),
         ("imgs/b.png", "too large"), _big_image),
    Case("idx-gzip-bomb", "gzip IDX whose data inflate far beyond its header's sizes",
         _train(data="bomb-idx3-ubyte.gz"), ("bomb-idx3-ubyte.gz", "(10, 8, 8)", "more"), _gzip_bomb),
    Case("npz-zip-bomb", ".npz whose member inflates far beyond its .npy header's size", _train(data="bomb.npz"),
         ("bomb.npz", "'x'", "holds"), _zip_bomb),
    Case("out-is-a-file", "train --out naming an existing file", ("train", *TINY, "--out", "afile"),
         ("afile", "directory"), _write("afile", "not a folder\n")),
    # model families: options that do not fit the data or each other
    Case("conv-on-a-table", "--arch conv on a .csv table", ("train", "--data", "good.csv", "--epochs", "1",
         "--no-progress", "--no-figures", "--out", "out", "--arch", "conv"), ("--arch", "(C, H, W)"),
         _write("good.csv", _csv(_GOOD_ROWS))),
    Case("resnet-bad-blocks", "--arch resnet with blocks -1", ("train", "--epochs", "1", "--no-progress",
         "--no-figures", "--out", "out", "--arch", "resnet", "--arch-args", '{"blocks": -1}'),
         ("--arch-args", "blocks")),
    Case("discretized-on-a-table", "--likelihood discretized-logistic on a .csv table",
         _train("--likelihood", "discretized-logistic", data="good.csv"), ("--likelihood", "tabular"),
         _write("good.csv", _csv(_GOOD_ROWS))),
    Case("iaf-full-covariance", "an IAF posterior on a full-covariance base",
         _train("--posterior", "iaf", "--posterior-args", '{"covariance": "full"}'),
         ("--posterior-args", "covariance")),
    Case("iaf-free-bits", "free bits with an IAF posterior (no KL per dimension)",
         _train("--posterior", "iaf", "--free-bits", "0.5"), ("--free-bits", "iaf")),
    Case("full-free-bits", "free bits per dimension with a full-covariance posterior (the KL is not their sum)",
         _train("--posterior", "full", "--free-bits", "0.5"), ("--free-bits", "full posterior")),
    Case("layers-zero-latents", "--layers 2 with an upper latent size 0",
         _train("--layers", "2", "--layer-args", '{"latent_dims": [0]}'), ("--layer-args", "latent_dims")),
    Case("vamp-no-pseudo-inputs", "--prior vamp with 0 pseudo-inputs",
         _train("--prior", "vamp", "--prior-args", '{"pseudo_inputs": 0}'), ("--prior-args", "pseudo_inputs")),
    Case("conditional-no-labels", "--conditional on an .npy file (no labels)", _train("--conditional", data="x.npy"),
         ("--conditional", "no labels"), _npy("x.npy", np.full((20, 1, 8, 8), 0.5, dtype=np.float32))),
    Case("conditional-vamp", "--conditional with the VampPrior", _train("--conditional", "--prior", "vamp"),
         ("--prior", "vamp")),
    Case("label-unconditional", "sample --label from an unconditional run",
         ("sample", "run", "--label", "3", "--out", "s.npy"), ("--label", "not conditional"), _run, run=True),
    # reliability, round 3 (issue 32): sizes checked before allocating, moderate floats, trackers, duplicate keys
    Case("mixture-huge", "a mixture prior of 100,000 components at --latent-dim 100000 (refused before allocating)",
         _train("--prior", "mixture", "--prior-args", '{"components": 100000}', "--latent-dim", "100000"),
         ("--prior-args", "training needs about", "prior_module.loc", "of memory")),
    Case("layer-latents-huge", "--layers 3 with an upper latent size of 100,000,000",
         _train("--layers", "3", "--layer-args", '{"latent_dims": [100000000, 2]}'),
         ("--layer-args", "training needs about", "of memory")),
    Case("layer-latents-float", "--layer-args latent_dims given as floats (1e8)",
         _train("--layers", "3", "--layer-args", '{"latent_dims": [1e8, 2]}'), ("--layer-args", "latent_dims")),
    Case("hidden-huge", "--hidden 1000000,1000000", _train("--hidden", "1000000,1000000"),
         ("--hidden", "training needs about", "1000000×1000000")),
    Case("batch-size-huge", "--batch-size 1,000,000,000", _train("--batch-size", "1000000000"),
         ("--batch-size 1000000000", "a step of 1000000000 examples")),
    Case("samples-huge", "--samples 100,000,000", _train("--samples", "100000000"),
         ("--samples 100000000", "draws", "of memory")),
    Case("vamp-init-huge", "--prior vamp with init_std 1e308", _train("--prior", "vamp", "--prior-args",
         '{"init_std": 1e308}'), ("--prior-args", "init_std", "1e+308")),
    Case("weight-decay-huge", "--weight-decay 1e308", _train("--weight-decay", "1e308"),
         ("--weight-decay", "<= 100", "1e308")),
    Case("decoder-variance-huge", "--decoder-variance 1e308", _train("--decoder-variance", "1e308"),
         ("--decoder-variance", "1e308")),
    Case("dist-timeout-huge", "--dist-timeout 1e308", _train("--dist-timeout", "1e308"), ("--dist-timeout", "1e308")),
    Case("mlflow-bogus-scheme", "--mlflow with an unknown URI scheme", _train("--mlflow", "bogus://x"),
         ("--mlflow bogus://x", "unknown tracking URI scheme 'bogus'")),
    Case("mlflow-nothing-listening", "--mlflow naming a local port with nothing listening",
         _train("--mlflow", "http://127.0.0.1:9/"), ("--mlflow http://127.0.0.1:9/", "cannot connect to 127.0.0.1:9")),
    Case("mlflow-sqlite-no-folder", "--mlflow sqlite:////x/y.db (a folder that does not exist is not created)",
         _train("--mlflow", "sqlite:////nonexistent-vaekit-folder/y.db"),
         ("--mlflow", "/nonexistent-vaekit-folder does not exist")),
    Case("json-option-duplicate-key", "--prior-args naming a key twice",
         _train("--prior", "mixture", "--prior-args", '{"components": 2, "components": 3}'),
         ("--prior-args", "duplicate key 'components'")),
    Case("config-file-duplicate-key", "--config JSON file naming a key twice", _train("--config", "cfg.json"),
         ("--config cfg.json", "duplicate key 'latent_dim'"), _write("cfg.json", '{"latent_dim": 2, "latent_dim": 3}')),
    Case("config-yaml-duplicate-key", "--config YAML file naming a key twice", _train("--config", "cfg.yaml"),
         ("--config cfg.yaml", "duplicate key 'latent_dim'"), _write("cfg.yaml", "latent_dim: 2\nlatent_dim: 3\n")),
    Case("run-config-duplicate-key", "a run's config.json naming latent_dim twice", _evaluate(),
         ("config.json", "duplicate key 'latent_dim'"), _duplicate_model_key, run=True),
    Case("sample-n-huge", "sample --n 1,000,000,000 (refused before drawing)",
         ("sample", "run", "--n", "1000000000", "--out", "s.npy"), ("--n 1000000000", "of memory"), _run, run=True),
    Case("interpolate-steps-huge", "interpolate --steps 1,000,000,000",
         ("interpolate", "run", "--steps", "1000000000", "--out", "i.npy"), ("--steps 1000000000", "of memory"),
         _run, run=True),
)


# --------------------------------------------------------------------------- running


def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``folder``: relative path -> (mtime in ns, sha256)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _vaekit(args: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error", "VAEKIT_DATA_DIR": str(cwd / "vaekit-data")}
    env.pop("VAEKIT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "vaekit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, env=env)


@dataclass
class Outcome:
    case: Case
    proc: subprocess.CompletedProcess
    before: dict[str, tuple[int, str]]
    after: dict[str, tuple[int, str]]


def run_catalogue(root: Path, cases: tuple[Case, ...] = CASES, workers: int = 4) -> dict[str, Outcome]:
    """Train the tiny run once, then run every case in ``root/<id>``; returns the outcomes by id."""
    trained = root / "trained"
    trained.mkdir(parents=True)
    proc = _vaekit(("train", "--data", "digits", *TINY, "--out", "run"), trained)
    assert proc.returncode == 0, proc.stderr
    run = trained / "run"

    def prepare(case: Case) -> tuple[Path, dict]:
        d = root / case.id
        d.mkdir()
        if case.run:
            shutil.copytree(run, d / "run")
        if case.setup is not None:
            case.setup(d)
        return d, _snapshot(d)

    prepared = {case.id: prepare(case) for case in cases}

    def go(case: Case) -> Outcome:
        d, before = prepared[case.id]
        proc = _vaekit(case.args, d)
        return Outcome(case, proc, before, _snapshot(d))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip([c.id for c in cases], pool.map(go, cases), strict=True))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    return run_catalogue(tmp_path_factory.mktemp("bad-inputs"))


def test_catalogue_is_large_and_ids_unique():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.slow            # 86 real subprocesses, about 1.5 minutes on 2 cores: run by .ci/run's second pass
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line(case: Case, outcomes: dict[str, Outcome]):
    out = outcomes[case.id]
    proc = out.proc
    shown = f"{' '.join(case.args)}\nexit {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr!r}"
    assert "Traceback" not in proc.stderr + proc.stdout, shown
    assert proc.returncode == 2, shown
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), shown
    line = lines[0]
    assert line.startswith("vaekit"), shown
    assert "error:" in line, shown
    for text in case.mentions:
        assert text in line, f"{text!r} not in the error line\n{shown}"
    assert out.after == out.before, f"files changed:\n{out.before}\n{out.after}\n{shown}"


# --------------------------------------------------------------------------- docs/bad-inputs.md


def _cell(text: str) -> str:
    return "`" + text.replace("|", "\\|") + "`" if text else ""


def markdown(results: dict[str, Outcome]) -> str:
    rows = ["| # | input | command | error line (stderr) | exit |", "|---|---|---|---|---|"]
    for i, (case_id, out) in enumerate(results.items(), 1):
        line = out.proc.stderr.strip().replace("\n", " ⏎ ")
        rows.append(f"| {i} | {out.case.what} (`{case_id}`) | {_cell('vaekit ' + ' '.join(out.case.args))} | "
                    f"{_cell(line)} | {out.proc.returncode} |")
    return (
        "# Bad inputs: what the command line says\n\n"
        "Every user error ends the command with **exit code 2** and **one line on stderr** that names\n"
        "the file or option at fault and says what is wrong; there is no traceback, and nothing that\n"
        "existed before is modified or deleted (a failed command writes no file at all). Exit code 1 is\n"
        "kept for internal errors (`vaekit CMD: internal error: ...`; set `VAEKIT_DEBUG=1` for the\n"
        "traceback), 130 for Ctrl-C.\n\n"
        f"The table below lists the {len(results)} malformed inputs of `tests/test_bad_inputs.py`,\n"
        "which checks all of the above for each of them. It was generated by running the cases\n"
        "(`python tests/test_bad_inputs.py --write`): every command ran in a folder of its own\n"
        "holding the bad file (or `run`, a copy of a tiny run directory trained with\n"
        f"`vaekit train --data digits {' '.join(TINY)}`, modified as described), so the paths are\n"
        "relative. Options such as `--epochs 1 --hidden 8 ...` appear in the train commands only to keep\n"
        "the catalogue fast; the option that matters comes last (a repeated option overrides the\n"
        "earlier one).\n\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        results = run_catalogue(Path(tmp))
        text = markdown(results)
    if "--write" in sys.argv[1:]:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC}")
    else:
        print(text)
