"""Every code block of README.md and docs/*.md runs as written (the markers: ``tests/docs_blocks.py``).

The default suite checks every block cheaply (Python compiles, shell passes ``bash -n``, every ``vaekit``
command line parses with the real parser and names only existing options, every block has a language and
every skip a reason) and runs the blocks marked ``quick``; ``-m slow`` runs the others. Python blocks run in a
fresh interpreter, shell blocks under ``bash -euo pipefail``, both in a temporary directory that holds the
files the examples name (:func:`_workspace`), with this checkout's ``vaekit`` first on PATH. The skipped
blocks, each with its reason, are listed by ``pytest -rs`` (and by :func:`test_every_skip_gives_its_reason`).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from docs_blocks import DIRECTIVES, REPO, Block, all_blocks, chain, vaekit_commands

BLOCKS = all_blocks()
RUNNABLE = [b for b in BLOCKS if b.kind is not None]
MNIST = REPO.parent / "shared" / "data" / "mnist"
MNIST_HINT = ("needs the MNIST IDX files: put them in ../shared/data/mnist beside the checkout (`vaekit train "
              "--data mnist --data-dir ../shared/data/mnist --download` fetches them)")
_TIMEOUT = 3600


def _params(blocks: list[Block]) -> list:
    out = []
    for block in blocks:
        marks = []
        if "skip" not in block.directives and "quick" not in block.directives:
            marks.append(pytest.mark.slow)
        out.append(pytest.param(block, id=block.id, marks=marks))
    return out


def test_the_documents_have_code_blocks():
    assert len(RUNNABLE) >= 10 and any(b.kind == "python" for b in RUNNABLE)


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in BLOCKS])
def test_every_block_has_a_language_and_known_directives(block: Block):
    assert block.language, f"{block.id}: give the block a language (python, bash, or text for what is not run)"
    unknown = set(block.directives) - set(DIRECTIVES)
    assert not unknown, f"{block.id}: unknown docs-test directive(s) {sorted(unknown)}; known: {DIRECTIVES}"
    if block.kind is None:
        assert not block.directives, f"{block.id}: a {block.language} block is not run; drop its docs-test marker"


def test_every_skip_gives_its_reason():
    skips = {b.id: b.directives["skip"] for b in RUNNABLE if "skip" in b.directives}
    assert all(len(reason) >= 10 for reason in skips.values()), skips
    print("\n".join(f"skipped {where}: {reason}" for where, reason in skips.items()))


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in RUNNABLE])
def test_every_block_is_well_formed(block: Block):
    """Python compiles; shell passes bash -n; each vaekit command line parses with the real parser."""
    if block.kind == "python":
        compile(block.text, block.id, "exec")
        return
    checked = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, f"{block.id}: {checked.stderr}"
    from vaekit.cli import build_parser

    for args in vaekit_commands(block.text):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                build_parser().parse_args(args)
            except SystemExit as exc:
                if "CUDA is not available" in err.getvalue():      # the option is right; this machine lacks the GPU
                    continue
                assert exc.code == 0, f"{block.id}: vaekit {' '.join(args)}: {err.getvalue().strip()}"


@pytest.mark.parametrize("block", _params(RUNNABLE))
def test_every_block_runs(block: Block, tmp_path: Path):
    if "skip" in block.directives:
        pytest.skip(f"{block.id}: {block.directives['skip']}")
    parts = chain(block, BLOCKS)
    if any("mnist" in b.directives for b in parts) and not MNIST.is_dir():
        pytest.skip(f"{block.id}: {MNIST_HINT}")
    _workspace(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default", "VAEKIT_DATA_DIR": str(tmp_path / "data")}
    for given in [b.directives["given"] for b in parts if "given" in b.directives]:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", given], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=_TIMEOUT)
        assert done.returncode == 0, f"{block.id}: given {given!r} exited {done.returncode}:\n{done.stderr[-3000:]}"
    if block.kind == "python":
        script = tmp_path / "example.py"
        script.write_text("\n".join(b.text for b in parts), encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        script = tmp_path / "example.sh"
        script.write_text("set -euo pipefail\n" + "\n".join(b.text for b in parts), encoding="utf-8")
        command = ["bash", str(script)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=_TIMEOUT)
    assert done.returncode == 0, f"{block.id} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _workspace(root: Path) -> None:
    """The files the examples name, made small: a table, train/test/other arrays, a config file, the
    example builder (examples/my_nets.py) and, where there is one, the MNIST folder as data/mnist."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(120, 6)) @ rng.normal(size=(6, 6))
    header = ",".join(f"col{i}" for i in range(6))
    np.savetxt(root / "my_table.csv", table, delimiter=",", header=header, comments="")
    np.savetxt(root / "other.csv", table[:40] + 0.1, delimiter=",", header=header, comments="")
    images = (rng.random((200, 8, 8)) < 0.3).astype(np.float32)
    np.save(root / "train.npy", images[:150])
    np.save(root / "test.npy", images[150:])
    np.save(root / "new.npy", images[150:])              # `vaekit score ... --data new.npy`: new data to score
    np.save(root / "big.npy", images)
    (root / "options.yaml").write_text("epochs: 2\nlatent_dim: 4\n", encoding="utf-8")
    shutil.copy(REPO / "examples" / "my_nets.py", root / "my_nets.py")
    (root / "examples").mkdir()
    shutil.copy(REPO / "examples" / "my_nets.py", root / "examples" / "my_nets.py")
    (root / "my_pngs").mkdir()
    for i, level in enumerate(rng.integers(0, 256, size=(12, 13, 21, 3), dtype=np.uint8)):
        Image.fromarray(level).save(root / "my_pngs" / f"{i}.png")
    if MNIST.is_dir():
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / "mnist").symlink_to(MNIST)
