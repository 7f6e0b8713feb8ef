"""The command line under faults of the environment: one line naming the path and the cause, status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import SAMPLE


def bertpipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertpipe.cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def one_line_error(done: subprocess.CompletedProcess, command: str) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith(f"bertpipe {command}: error:")]
    return line


def test_paths_that_cannot_be_used(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert one_line_error(bertpipe("ingest", SAMPLE, "--out", a_file / "sub"), "ingest").endswith(f"{a_file / 'sub'}: not a directory")
    assert one_line_error(bertpipe("ingest", SAMPLE, "--out", a_file), "ingest").endswith(f"{a_file}: file exists")
    assert one_line_error(bertpipe("ingest", tmp_path / "missing", "--out", tmp_path / "o"), "ingest").endswith(
        f"{tmp_path / 'missing'}: no such file or directory")


@pytest.fixture
def full_disk(tmp_path):
    """A real 96 KiB filesystem (tmpfs; needs root, as in CI)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_says_so(full_disk, sample_docs, tmp_path):
    line = one_line_error(bertpipe("ingest", SAMPLE, "--out", full_disk, "--workers", "1"), "ingest")
    assert "no space left on device" in line, line
    tok = bertpipe("wordpiece", sample_docs.path, "--out", tmp_path / "tok", "--vocab-size", "800")
    shards = bertpipe("shards", sample_docs.path, "--tokenizer", tmp_path / "tok", "--out", tmp_path / "shards",
                      "--dupe-factor", "1", "--max-seq-length", "64", "--workers", "1")
    assert tok.returncode == 0 and shards.returncode == 0, shards.stderr[-2000:]
    line = one_line_error(bertpipe("pretrain", tmp_path / "shards", "--out", full_disk, "--steps", "2", "--hidden-size", "64",
                                   "--num-attention-heads", "2", "--num-hidden-layers", "2", "--intermediate-size", "128",
                                   "--batch-size", "4", "--eval-every", "0"), "pretrain")
    assert "no space left on device" in line, line


def test_a_skipped_input_fails_the_command_or_is_reported_on_stderr(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "ok.txt").write_text("A real sentence that is long enough to keep. And another one.\n")
    (src / "blob.txt").write_bytes(bytes(range(256)) * 10)
    line = one_line_error(bertpipe("ingest", src, "--out", tmp_path / "o"), "ingest")
    assert "blob.txt (binary file (NUL bytes))" in line and "--on-bad-file skip" in line
    done = bertpipe("ingest", src, "--out", tmp_path / "o", "--on-bad-file", "skip")
    assert done.returncode == 0 and f"bertpipe ingest: skipped {src / 'blob.txt'}: binary file (NUL bytes)" in done.stderr


def test_a_misspelt_config_key_fails_before_anything_runs(tmp_path):
    work = tmp_path / "work"
    done = bertpipe("plan", "tiny", "--work-dir", work, "--overrides", '{"shards": {"masking": {"masked_lm_probability": 0.4}}}')
    assert one_line_error(done, "plan") == ("bertpipe plan: error: preset tiny with overrides: "
                                            "`shards.masking.masked_lm_probability` is not a field; did you mean `masked_lm_prob`?")
    config = tmp_path / "pretrain.json"
    config.write_text('{"steps": 2, "optim": {"lr": 1e-3, "warmup": 1}}')
    done = bertpipe("pretrain", tmp_path / "no-shards", "--out", work, "--config", config)
    assert one_line_error(done, "pretrain") == (f"bertpipe pretrain: error: {config}: `optim.warmup` is not a field; "
                                                "did you mean `warmup_steps` or `warmup_ratio`?")
    assert not work.exists()
