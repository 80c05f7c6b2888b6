"""Help text for a terminal: reStructuredText markup of docstrings turned into plain text.

The ``--help`` of a subcommand is partly its module's docstring, written for Sphinx. :func:`plain`
removes the markup a reader should not see (emphasis, rare in help, stays): a role such as
``:mod:`~vaekit.training.distributed``` becomes ``distributed`` (``:func:`vaekit.fit``` becomes
``vaekit.fit``, ```text <target>``` becomes ``text``), and a double-backquoted literal loses its
quotes (single quotes where it holds a space, so that a command stays one piece:
``vaekit train --resume`` becomes 'vaekit train --resume').
:func:`description` also reflows each paragraph to the terminal width of the help.
This module imports nothing heavy: the parser is built without torch.
"""

from __future__ import annotations

import re
import textwrap

__all__ = ["plain", "description"]

# :role:`~a.b.c` -> c, :role:`a.b` -> a.b, :role:`text <a.b>` -> text (roles such as :mod:, :py:class:)
_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`(~?)([^`<]*?)\s*(?:<[^`>]*>)?`")
_LITERAL = re.compile(r"``(.+?)``", re.S)
_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]+>`_{1,2}")   # `text <url>`_


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return target.rsplit(".", 1)[-1] if short else target


def _literal(match: re.Match[str]) -> str:
    text = " ".join(match.group(1).split())
    return f"'{text}'" if " " in text else text


def plain(text: str) -> str:
    """``text`` without reStructuredText roles, literals and links (see the module)."""
    text = _ROLE.sub(_role, text)
    text = _LINK.sub(r"\1", text)
    return _LITERAL.sub(_literal, text)


def description(doc: str, width: int = 88) -> str:
    """A docstring's paragraphs as plain text, each reflowed to ``width`` columns; indented lines
    (examples, lists) are kept as they are."""
    out = []
    for paragraph in plain(doc).strip().split("\n\n"):
        lines = paragraph.splitlines()
        if any(line.startswith((" ", "\t", "* ", "- ")) for line in lines):
            out.append(paragraph)
        else:
            out.append(textwrap.fill(" ".join(line.strip() for line in lines), width))
    return "\n\n".join(out)
