"""core.atomic: a file or folder appears complete under its name, or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from SpineSegDiffLib.core.atomic import atomic_dir, atomic_path, write_text


def test_atomic_path_renames_on_success_and_keeps_compound_suffixes(tmp_path):
    target = tmp_path / "sub" / "seg.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".part.nii.gz") and tmp != target
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert [p.name for p in target.parent.iterdir()] == ["seg.nii.gz"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600


def test_atomic_path_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "dataset"
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("a")
            raise ValueError("stop")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (target / "a.txt").read_text() == "a" and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(OSError):  # refuses to replace an existing folder
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("b")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"] and len(list(tmp_path.iterdir())) == 1


def test_write_text(tmp_path):
    write_text(tmp_path / "x" / "t.txt", "héllo\n")
    assert (tmp_path / "x" / "t.txt").read_text(encoding="utf-8") == "héllo\n"
