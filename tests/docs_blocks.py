"""The code blocks of README.md and docs/*.md, with the markers that say how each is tested.

A fenced block (```python, ```bash, ```sh, ```shell) is code and is run by ``tests/test_docs_examples.py``;
a block of another language (```text, ```json, ```yaml) is shown, not run; a block without a language is an
error (give it one). HTML comments on the lines right above a block's opening fence say how it runs, one or
more directives separated by ``;``:

    <!-- docs-test: quick -->              run in the default suite (the block is quick as written)
    <!-- docs-test: skip REASON -->        never run; REASON is required and shown by pytest
    <!-- docs-test: mnist -->              needs the MNIST IDX files (linked as data/mnist in the temporary
                                           directory; skipped, saying how to get them, where they are absent)
    <!-- docs-test: continues -->          runs after the previous block of the same language in the same
                                           file: Python in its namespace, shell in its directory
    <!-- docs-test: given COMMAND -->      a shell command run first, in the same directory, for what the block
                                           presupposes (e.g. ``given vaekit train --epochs 1 --out runs/digits``)

A runnable block without ``quick`` or ``skip`` runs under ``-m slow``. New blocks are found by themselves.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNABLE = {"python": "python", "bash": "shell", "sh": "shell", "shell": "shell"}
DIRECTIVES = ("quick", "skip", "mnist", "continues", "given")
_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:(.*?)-->\s*$")


@dataclass
class Block:
    """One fenced block: where it is, its language, its text and its directives."""

    path: Path
    line: int                    # 1-based line of the opening fence
    language: str                # "" when the fence names none
    text: str
    directives: dict[str, str] = field(default_factory=dict)   # directive -> its argument ("" when none)

    @property
    def kind(self) -> str | None:
        """"python", "shell" or None (shown, not run)."""
        return RUNNABLE.get(self.language)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, in order, with the directives of the marker lines right above each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, language = opening.groups()
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end])
        found.append(Block(path, i + 1, language.lower(), body + "\n", _directives(lines, i)))
        i = end + 1
    return found


def _directives(lines: list[str], fence: int) -> dict[str, str]:
    """The directives of the marker comments on the lines right above line ``fence`` (0-based)."""
    out: dict[str, str] = {}
    j = fence - 1
    while j >= 0 and (marker := _MARKER.match(lines[j])):
        for part in marker.group(1).split(";"):
            word, _, argument = part.strip().partition(" ")
            if word:
                out[word] = argument.strip()
        j -= 1
    return out


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in blocks(path)]


def chain(block: Block, everything: list[Block]) -> list[Block]:
    """``block`` preceded by the blocks it continues (same file and kind, each marked ``continues``)."""
    same = [b for b in everything if b.path == block.path and b.kind == block.kind]
    at = same.index(block)
    start = at
    while start > 0 and "continues" in same[start].directives:
        start -= 1
    return same[start:at + 1]


def vaekit_commands(text: str) -> list[list[str]]:
    """The argument lists of the ``vaekit`` commands of a shell block (``vaekit ARGS``, ``python -m vaekit
    ARGS``, ``torchrun ... -m vaekit ARGS``), one per command of each line (split at ``&&``, ``||``, ``;``, ``|``)."""
    joined = re.sub(r"\\\n", " ", text)
    commands: list[list[str]] = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        part: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", "||", ";", "|"):
                if part[1:] and part[0] == "vaekit":          # bare `vaekit` lists the commands
                    commands.append(part[1:])
                elif "-m" in part and part.index("-m") + 1 < len(part) and part[part.index("-m") + 1] == "vaekit":
                    commands.append(part[part.index("-m") + 2:])
                part = []
            else:
                part.append(word)
    return commands
