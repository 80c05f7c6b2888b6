"""Shared fixtures for the data-layer tests: the real MNIST folder and a loopback HTTP server."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mnist_skip import HOW

MNIST_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
MNIST_GZ = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four real MNIST .gz files; skip when it is not there."""
    if not all((MNIST_DIR / f).is_file() for f in MNIST_GZ):
        pytest.skip(f"real MNIST files not found in {MNIST_DIR}" + HOW)
    return MNIST_DIR


class _Server:
    """A running loopback HTTP server; ``url`` is its base URL, ``requests`` the paths asked for."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                requests.append(self.path)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
                pass  # keep the test output quiet

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        """Stop serving and release the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], _Server]]:
    """Factory: ``http_server(folder)`` serves ``folder`` on 127.0.0.1 (random port) until teardown."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    servers: list[_Server] = []

    def start(directory: Path) -> _Server:
        server = _Server(directory)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()

