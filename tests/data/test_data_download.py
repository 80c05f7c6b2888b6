"""Downloading MNIST-style IDX files, against HTTP servers on loopback (no internet needed)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

import vaekit.data.mnist as mnist_module
from vaekit.data import download_idx_files, load_dataset
from vaekit.errors import DataError

GZ = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _names(folder: Path) -> list[str]:
    """Every entry in ``folder`` (hidden temporary files included), sorted."""
    return sorted(p.name for p in folder.iterdir())


def _mirror_with(tmp_path: Path, mnist_dir: Path, replace: dict[str, bytes]) -> Path:
    """A folder serving the real files (as symlinks) except those in ``replace``."""
    folder = tmp_path / "served"
    folder.mkdir()
    for name in GZ:
        if name in replace:
            (folder / name).write_bytes(replace[name])
        else:
            (folder / name).symlink_to(mnist_dir / name)
    return folder


def test_download_gives_byte_identical_files(mnist_dir: Path, tmp_path: Path, http_server, capfd) -> None:
    server = http_server(mnist_dir)
    dest = tmp_path / "new" / "mnist"  # created on demand
    ds = load_dataset("mnist", data_dir=dest, download=True, mirrors=[server.url])
    assert _names(dest) == sorted(GZ)
    for name in GZ:
        assert (dest / name).read_bytes() == (mnist_dir / name).read_bytes()
    assert len(ds.train) + len(ds.val) == 60000 and len(ds.test) == 10000
    assert capfd.readouterr() == ("", "")  # progress=False: the library prints nothing

    # a second call finds the files and does not ask the server again
    before = len(server.requests)
    load_dataset("mnist", data_dir=dest, download=True, mirrors=[server.url])
    assert len(server.requests) == before


def test_first_mirror_404_falls_back_to_the_second(mnist_dir: Path, tmp_path: Path, http_server) -> None:
    server = http_server(mnist_dir)
    paths = download_idx_files("mnist", tmp_path, mirrors=[server.url + "missing/", server.url])
    assert [p.name for p in paths] == list(GZ)
    assert server.requests[:2] == ["/missing/train-images-idx3-ubyte.gz", "/train-images-idx3-ubyte.gz"]
    assert _names(tmp_path) == sorted(GZ)


def test_unreachable_mirror_falls_back_and_env_var_sets_mirrors(
    mnist_dir: Path, tmp_path: Path, http_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = http_server(mnist_dir)
    monkeypatch.setenv("VAEKIT_MNIST_MIRROR", f"http://127.0.0.1:1/, {server.url.rstrip('/')}")
    ds = load_dataset("mnist", data_dir=tmp_path, download=True, val_fraction=0.5)
    assert len(ds.val) == 30000
    assert _names(tmp_path) == sorted(GZ)


def test_module_constant_is_the_default(mnist_dir: Path, tmp_path: Path, http_server, monkeypatch) -> None:
    server = http_server(mnist_dir)
    monkeypatch.delenv("VAEKIT_MNIST_MIRROR", raising=False)
    monkeypatch.setattr(mnist_module, "MNIST_MIRRORS", (server.url,))
    download_idx_files("mnist", tmp_path)
    assert _names(tmp_path) == sorted(GZ)


def test_checksum_mismatch_discards_the_file(mnist_dir: Path, tmp_path: Path, http_server) -> None:
    labels = bytearray(gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[100] = (labels[100] + 1) % 10  # valid gzip, valid IDX, wrong content
    served = _mirror_with(tmp_path, mnist_dir, {"t10k-labels-idx1-ubyte.gz": gzip.compress(bytes(labels))})
    server = http_server(served)
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=dest, download=True, mirrors=[server.url])
    msg = str(info.value)
    assert "checksum mismatch" in msg and "t10k-labels-idx1-ubyte.gz" in msg and "\n" not in msg
    # the three good files stay; the bad one and its temporary file are gone
    assert _names(dest) == sorted(set(GZ) - {"t10k-labels-idx1-ubyte.gz"})


def test_corrupt_bytes_fail_the_checksum(mnist_dir: Path, tmp_path: Path, http_server) -> None:
    blob = bytearray((mnist_dir / "train-labels-idx1-ubyte.gz").read_bytes())
    blob[len(blob) // 2] ^= 0x55
    served = _mirror_with(tmp_path, mnist_dir, {"train-labels-idx1-ubyte.gz": bytes(blob)})
    server = http_server(served)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="checksum mismatch"):
        download_idx_files("mnist", dest, mirrors=[server.url])
    assert _names(dest) == ["train-images-idx3-ubyte.gz"]


def test_fashion_checksums_are_not_mnist_checksums(mnist_dir: Path, tmp_path: Path, http_server) -> None:
    server = http_server(mnist_dir)  # serves MNIST where Fashion-MNIST is expected
    with pytest.raises(DataError, match="checksum mismatch.*8d4fb7e6c68d591d4c3dfef9ec88bf0d"):
        load_dataset("fashion-mnist", data_dir=tmp_path, download=True, mirrors=[server.url])
    assert _names(tmp_path) == []


def test_all_mirrors_failing_lists_them(tmp_path: Path, http_server) -> None:
    (tmp_path / "empty").mkdir()
    server = http_server(tmp_path / "empty")
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        download_idx_files("mnist", dest, mirrors=[server.url, "http://127.0.0.1:1/"])
    msg = str(info.value)
    assert "could not download from any mirror" in msg and "HTTP 404" in msg and "127.0.0.1:1" in msg
    assert "\n" not in msg
    assert _names(dest) == []


def test_existing_files_are_never_overwritten(mnist_dir: Path, tmp_path: Path, http_server) -> None:
    server = http_server(mnist_dir)
    mine = tmp_path / "train-labels-idx1-ubyte"  # a raw file of the user's, even a bogus one
    mine.write_bytes(b"user data")
    (tmp_path / "t10k-images-idx3-ubyte.gz").symlink_to(mnist_dir / "t10k-images-idx3-ubyte.gz")
    paths = download_idx_files("mnist", tmp_path, mirrors=[server.url])
    assert paths[1] == mine and mine.read_bytes() == b"user data"
    assert "/train-labels-idx1-ubyte.gz" not in server.requests
    assert "/t10k-images-idx3-ubyte.gz" not in server.requests
    assert not (tmp_path / "train-labels-idx1-ubyte.gz").exists()


def test_progress_bar_can_be_shown(mnist_dir: Path, tmp_path: Path, http_server, capfd) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "t10k-labels-idx1-ubyte.gz").symlink_to(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    dest = tmp_path / "dest"
    dest.mkdir()
    for name in GZ[:3]:
        (dest / name).symlink_to(mnist_dir / name)
    server = http_server(served)
    download_idx_files("mnist", dest, mirrors=[server.url], progress=True)
    assert "t10k-labels-idx1-ubyte.gz" in capfd.readouterr().err
    labels = np.frombuffer(gzip.decompress((dest / GZ[3]).read_bytes())[8:], np.uint8)
    assert len(labels) == 10000
