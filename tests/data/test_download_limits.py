"""``--download`` reads no more than a file can be (issue 14): a mirror that announces or sends more
bytes than a gzip of the known MNIST file can have is refused and the next one tried; a
recompressed file is inflated no further than the known size; https mirrors come first."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import vaekit.data.mnist as mnist_module
from vaekit.data import download_idx_files
from vaekit.errors import DataError

LABELS = "t10k-labels-idx1-ubyte"


def _only_labels_missing(dest: Path, mnist_dir: Path) -> None:
    dest.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (dest / f"{name}.gz").symlink_to(mnist_dir / f"{name}.gz")


@pytest.fixture
def endless_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[int]]]:
    """A server that sends 10 MB for any path with no Content-Length (the end is the closed
    connection); yields its URL and the number of bytes each response got out."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    sent: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            self.send_response(200)
            self.end_headers()
            count = 0
            try:
                for _ in range(160):
                    self.wfile.write(bytes(1 << 16))
                    count += 1 << 16
            except OSError:
                pass                                  # the client hung up: what the cap is for
            sent.append(count)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", sent
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_a_file_larger_than_it_can_be_is_refused_and_the_next_mirror_used(mnist_dir: Path, tmp_path: Path,
                                                                         http_server) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / f"{LABELS}.gz").write_bytes(bytes(mnist_module._max_download(LABELS) + 1))
    good = http_server(mnist_dir)
    dest = tmp_path / "dest"
    _only_labels_missing(dest, mnist_dir)
    download_idx_files("mnist", dest, mirrors=[http_server(big).url, good.url])
    assert (dest / f"{LABELS}.gz").read_bytes() == (mnist_dir / f"{LABELS}.gz").read_bytes()
    assert sorted(p.name for p in dest.iterdir() if p.name.startswith(".")) == []


def test_a_mirror_that_never_stops_is_cut_off_at_the_cap(mnist_dir: Path, tmp_path: Path, endless_server) -> None:
    url, sent = endless_server
    dest = tmp_path / "dest"
    _only_labels_missing(dest, mnist_dir)
    cap = mnist_module._max_download(LABELS)
    with pytest.raises(DataError) as info:
        download_idx_files("mnist", dest, mirrors=[url])
    message = str(info.value)
    assert f"sent more than the {cap} bytes the file can have" in message and "\n" not in message
    assert sorted(p.name for p in dest.iterdir() if not p.is_symlink()) == []   # nothing partial left behind


def test_verifying_a_recompressed_file_inflates_no_more_than_the_known_size(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(bytes(1 << 20)))
    assert mnist_module._md5_gunzip(bomb, 1 << 20) is not None
    assert mnist_module._md5_gunzip(bomb, (1 << 20) - 1) is None


def test_https_mirrors_come_first() -> None:
    for mirrors in (mnist_module.MNIST_MIRRORS, mnist_module.FASHION_MNIST_MIRRORS):
        schemes = [m.split(":", 1)[0] for m in mirrors]
        assert schemes[0] == "https" and schemes == sorted(schemes, key=lambda s: s != "https")


def test_the_caps_hold_the_real_files(mnist_dir: Path) -> None:
    for name in mnist_module.IDX_FILES:
        size = (mnist_dir / f"{name}.gz").stat().st_size
        assert size <= mnist_module._max_download(name)
        assert len(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes())) == mnist_module._RAW_SIZES[name]
