"""A single-stream bzip2 file entered at any block: every block decompresses on its own."""

from __future__ import annotations

import bz2
import random

import pytest

from bertpipe.data.bz2blocks import blocks_from, next_magic


@pytest.fixture(scope="module")
def text():
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghijklm") for _ in range(rng.randint(2, 9))) for _ in range(2000)]
    return " ".join(rng.choice(words) for _ in range(120_000)).encode()


@pytest.mark.parametrize("level", [1, 3, 9])
def test_every_block_of_one_or_several_streams_decompresses_alone(tmp_path, text, level):
    path = tmp_path / "t.bz2"
    path.write_bytes(bz2.compress(text, level) + bz2.compress(text[:777], level))  # pbzip2 and cat make several streams
    blocks = list(blocks_from(path, 32))  # the first block follows the 4-byte "BZh9" header
    assert b"".join(data for _, data in blocks) == text + text[:777]
    assert len(blocks) >= (len(text) // (level * 100_000)) + 1
    if len(blocks) > 4:
        assert len({start % 8 for start, _ in blocks}) > 1, "blocks start at any bit, not only at bytes"
    with open(path, "rb") as f:
        assert [next_magic(f, start) for start, _ in blocks] == [start for start, _ in blocks]
        assert [next_magic(f, start + 1) for start, _ in blocks[:-1]] == [start for start, _ in blocks[1:]]
    later = blocks[-2][0]
    assert b"".join(data for _, data in blocks_from(path, later)) == b"".join(data for _, data in blocks[-2:])


def test_a_start_that_is_not_a_block_is_an_error_naming_it(tmp_path, text):
    path = tmp_path / "t.bz2"
    path.write_bytes(bz2.compress(text, 1))
    with pytest.raises(OSError, match="bit 40 .*does not decompress"):
        next(blocks_from(path, 40))


def test_corrupt_and_truncated_data_are_errors(tmp_path, text):
    data = bytearray(bz2.compress(text, 1))
    starts = [s for s, _ in blocks_from(_write(tmp_path / "ok.bz2", data), 32)]
    bad = bytearray(data)
    bad[starts[1] // 8 + 40] ^= 0x55  # inside the second block's data
    with pytest.raises(OSError, match="does not decompress"):
        list(blocks_from(_write(tmp_path / "bad.bz2", bad), 32))
    with pytest.raises(EOFError, match="ends before its end-of-stream marker"):
        list(blocks_from(_write(tmp_path / "cut.bz2", data[: starts[-1] // 8 + 500]), 32))


def _write(path, data):
    path.write_bytes(bytes(data))
    return path
