"""Atomic writes: the destination is replaced whole or not at all; stale temporaries are cleaned up."""

from __future__ import annotations

import pytest

from vaekit.store.atomic import atomic_write_bytes, remove_stale_temporaries


class _Boom(Exception):
    pass


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "weights.bin"
    atomic_write_bytes(target, b"old")

    def exploding_replace(src, dst):
        raise _Boom

    monkeypatch.setattr("vaekit.store.atomic.os.replace", exploding_replace)
    with pytest.raises(_Boom):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    target = tmp_path / "last.json"
    target.write_text("{}")
    (tmp_path / ".last.json.0123abcd.tmp").write_text("half")
    (tmp_path / ".other.json.0123abcd.tmp").write_text("not ours")
    assert remove_stale_temporaries(target) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.0123abcd.tmp", "last.json"]
