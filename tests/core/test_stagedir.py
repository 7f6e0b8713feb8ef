"""Atomic directories and the one definition of a complete stage output."""

from __future__ import annotations

import json

import pytest

from bertpipe.core.stagedir import (
    COMPLETE_MARKER,
    MANIFEST,
    atomic_dir,
    build_seconds,
    is_complete,
    publish_latest,
    read_manifest,
    resolve_stage_dir,
    stage_dir,
)


def hidden(root):
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_a_directory_appears_only_when_its_block_succeeds(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not final.exists() and tmp.parent == tmp_path
    assert (final / "a.txt").read_text() == "a" and hidden(tmp_path) == []

    with pytest.raises(RuntimeError, match="boom"), atomic_dir(tmp_path / "failed") as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")
    assert not (tmp_path / "failed").exists() and hidden(tmp_path) == []


def test_the_first_writer_wins_and_replace_swaps(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as ours:
        (ours / "who").write_text("ours")
        with atomic_dir(final) as theirs:  # a concurrent writer finishes first
            (theirs / "who").write_text("theirs")
    assert (final / "who").read_text() == "theirs" and hidden(tmp_path) == []

    with atomic_dir(final, replace=True) as tmp:  # checkpoints: a newer copy replaces the old one
        (tmp / "who").write_text("newer")
    assert (final / "who").read_text() == "newer" and hidden(tmp_path) == []


def test_a_fixed_work_directory_survives_a_failure(tmp_path):
    work = tmp_path / ".out.partial"
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "out", work=work):
        (work / "checkpoint").write_text("step 3")
        raise KeyboardInterrupt
    assert (work / "checkpoint").read_text() == "step 3" and not (tmp_path / "out").exists()
    with atomic_dir(tmp_path / "out", work=work):
        (work / "final").write_text("done")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoint", "final"] and not work.exists()


def test_complete_means_manifest_and_marker(tmp_path):
    with pytest.raises(RuntimeError, match="wrote no manifest.json"), stage_dir(tmp_path / "none"):
        pass
    assert not (tmp_path / "none").exists()

    leftover = tmp_path / "fp"
    leftover.mkdir()
    (leftover / MANIFEST).write_text("{}")  # what older versions left: a manifest without the marker
    assert not is_complete(leftover)
    with pytest.raises(FileNotFoundError, match="not a complete stage output"):
        read_manifest(leftover)
    with stage_dir(leftover) as tmp:
        (tmp / MANIFEST).write_text(json.dumps({"stage": "toy"}))
    assert is_complete(leftover) and (leftover / COMPLETE_MARKER).is_file() and read_manifest(leftover) == {"stage": "toy"}
    (leftover / COMPLETE_MARKER).unlink()
    assert not is_complete(leftover)


def test_the_marker_records_how_long_the_build_took_and_old_markers_have_no_figure(tmp_path):
    import time

    with stage_dir(tmp_path / "fp") as tmp:
        (tmp / MANIFEST).write_text("{}")
        time.sleep(0.2)
    assert 0.2 <= build_seconds(tmp_path / "fp") < 5
    (tmp_path / "fp" / COMPLETE_MARKER).write_text("2026-01-01T00:00:00+0000\n")  # written before the record existed
    assert is_complete(tmp_path / "fp") and build_seconds(tmp_path / "fp") is None
    assert build_seconds(tmp_path / "missing") is None


def test_a_root_resolves_through_latest_and_the_stage_is_checked(tmp_path):
    with stage_dir(tmp_path / "abc") as tmp:
        (tmp / MANIFEST).write_text(json.dumps({"stage": "shards"}))
    publish_latest(tmp_path, "abc")
    assert resolve_stage_dir(tmp_path) == resolve_stage_dir(tmp_path / "abc", "shards") == tmp_path / "abc"
    with pytest.raises(ValueError, match="holds a 'shards' output; expected 'ingest'"):
        resolve_stage_dir(tmp_path, "ingest")
    with pytest.raises(FileNotFoundError, match="neither a complete stage output nor a stage root"):
        resolve_stage_dir(tmp_path / "missing")
    publish_latest(tmp_path, "gone")
    with pytest.raises(FileNotFoundError, match="points to .*gone"):
        resolve_stage_dir(tmp_path)


def test_the_next_build_removes_what_dead_builders_left(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from bertpipe.core.stagedir import _HOST, remove_debris

    final = tmp_path / "0123456789abcdef"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    names = {"dead": f".{final.name}.tmp-{_HOST}-{dead.stdout.strip()}-x1", "live": f".{final.name}.tmp-{_HOST}-{os.getpid()}-x2",
             "other host": f".{final.name}.tmp-elsewhere-1-x3", "old, no pid": f".{final.name}.tmp-k2j3h4",
             "recent, no pid": f".{final.name}.tmp-zz9x8y", "another output": ".fedcba9876543210.tmp-x-1-x4"}
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "part.parquet").write_bytes(b"half")
    week_ago = time.time() - 7 * 86_400
    os.utime(tmp_path / names["old, no pid"], (week_ago, week_ago))
    removed = {p.name for p in remove_debris(final)}
    assert removed == {names["dead"], names["old, no pid"]}
    assert {p.name for p in tmp_path.iterdir()} == set(names.values()) - removed


@pytest.mark.parametrize("umask,mode", [(0o022, 0o755), (0o002, 0o775), (0o077, 0o700)])
def test_outputs_get_the_umasks_permissions(tmp_path, umask, mode):
    import os

    old = os.umask(umask)
    try:
        with stage_dir(tmp_path / "out") as tmp:
            (tmp / MANIFEST).write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == mode
