"""Atomic writes: the destination is replaced whole or not at all; stale temporaries are cleaned up."""

from __future__ import annotations

import os

import pytest

from vaekit.store.atomic import atomic_write_bytes, name_max, remove_stale_temporaries, temporary_stem


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


@pytest.mark.parametrize("name", ["a" * 230, "b" * 251 + ".bin", "é" * 127 + "x", "ü" * 100 + "a" * 55])
def test_names_at_the_limit_are_written_and_their_temporaries_fit(tmp_path, monkeypatch, name):
    """A legal name of up to NAME_MAX (255) bytes: the temporary name stays within the limit too, is
    distinct for two names that share their first 200 bytes, and is found by remove_stale_temporaries."""
    assert len(name.encode()) <= 255
    seen = []
    real_open = os.open

    def spy(path, *args, **kwargs):
        seen.append(os.path.basename(os.fspath(path)))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("vaekit.store.atomic.os.open", spy)
    atomic_write_bytes(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data"
    assert len(seen) == 1 and len(seen[0].encode()) <= name_max(tmp_path) and seen[0].endswith(".tmp")
    assert [p.name for p in tmp_path.iterdir()] == [name]
    other = name[:-1] + ("y" if name[-1] != "y" else "z")
    assert len(other.encode()) > 200
    assert temporary_stem(other, 255) != temporary_stem(name, 255) or len(name.encode()) + 38 <= 255
    (tmp_path / f".{temporary_stem(name, name_max(tmp_path))}.{'0' * 32}.tmp").write_bytes(b"half")
    (tmp_path / f".{temporary_stem(other, name_max(tmp_path))}.{'1' * 32}.tmp").write_bytes(b"not ours")
    assert remove_stale_temporaries(tmp_path / name) == 1
    assert len(list(tmp_path.iterdir())) == 2


def test_temporary_stem_keeps_short_names_and_cuts_long_ones_on_a_character():
    assert temporary_stem("model.safetensors") == "model.safetensors"
    stem = temporary_stem("é" * 127 + "x", 255)
    assert len(f".{stem}.{'0' * 32}.tmp".encode()) <= 255
    prefix, _, digest = stem.rpartition("~")
    assert set(prefix) == {"é"} and len(digest) == 16                     # whole characters, then the hash
