"""Enter a single-stream bzip2 file in the middle: find its blocks, decompress any run of them.

Wikimedia publishes ``enwiki-latest-pages-articles.xml.bz2`` as one bzip2 stream, and a
stream has no byte-aligned entry points, so it used to be one unit of the ingest stage, read
on one core. But bzip2 compresses in independent blocks (at most 900 kB of input each):
every block starts with the 48-bit magic ``0x314159265359`` (the digits of π) at any *bit*
offset and ends where the next block's magic, or the stream's end-of-stream marker
``0x177245385090`` (√π), starts. ``next_block`` finds the first magic at or after a byte by
searching its five fully determined middle bytes for each of the 8 bit alignments;
``blocks_from`` decompresses block after block from a block start, each as a stream of its
own: a ``BZh9`` header, the block's bits shifted to a byte boundary, the end-of-stream
marker and the block's own CRC as the stream's. This is what lbzip2 and ``indexed_bzip2``
do; here with Python's ``bz2`` and integer shifts, about 1 ms per block, small beside the
block's decompression (tens of ms).

A magic can also occur by chance inside compressed data (odds about 2⁻⁴⁸ per bit, once in
some 35 TB). Such a false start fails its block's CRC check; a unit that starts there stops
with an error naming the bit offset instead of reading garbage, and inside a unit a failed
block is merged with the next before it is given up on.
"""

from __future__ import annotations

import bz2
from collections.abc import Iterator
from pathlib import Path

BLOCK_MAGIC = 0x314159265359
END_MAGIC = 0x177245385090
_SCAN = 1 << 18  # bytes searched per read: about one compressed block of text
_MAX_MERGE = 3  # false block starts merged into one block before the data is declared corrupt


def _patterns(magic: int) -> list[tuple[int, bytes, int, int]]:
    """(shift, the 5 fully determined middle bytes, the low bits of the byte before, the high
    bits of the byte after) of ``magic`` starting ``shift`` bits into a byte."""
    out = []
    for s in range(8):
        v = (magic << (8 - s)).to_bytes(7, "big")  # the magic at bits s .. s + 48 of 7 bytes
        out.append((s, v[1:6], v[0], v[6]))
    return out


_BLOCK, _END = _patterns(BLOCK_MAGIC), _patterns(END_MAGIC)


def _find(buf: bytes, pats: list[tuple[int, bytes, int, int]], lo: int) -> int | None:
    """The smallest bit offset ≥ ``lo`` at which one of ``pats`` matches in ``buf``, or None."""
    best = None
    for s, mid, head, tail in pats:
        hmask, tmask = 0xFF >> s, (0xFF << (8 - s)) & 0xFF
        i = buf.find(mid, max(1, lo // 8))  # the middle bytes start one byte after the magic's first
        while i >= 0:
            bit = (i - 1) * 8 + s
            if best is not None and bit >= best:
                break
            if (bit >= lo and buf[i - 1] & hmask == head & hmask
                    and (s == 0 or (i + 5 < len(buf) and buf[i + 5] & tmask == tail & tmask))):
                best = bit
                break
            i = buf.find(mid, i + 1)
    return best


def next_magic(f, bit: int, end_too: bool = False) -> int | None:
    """The bit offset of the first block magic (or end-of-stream marker too) at or after ``bit``."""
    pats = _BLOCK + (_END if end_too else [])
    pos = max(0, bit // 8 - 1)
    while True:
        f.seek(pos)
        buf = f.read(_SCAN + 8)
        if len(buf) < 7:
            return None
        if (hit := _find(buf, pats, bit - pos * 8)) is not None:
            return pos * 8 + hit
        if len(buf) < _SCAN + 8:
            return None
        pos += _SCAN


def _bits(f, lo: int, hi: int) -> int:
    """Bits ``lo`` .. ``hi`` of the file as an integer."""
    f.seek(lo // 8)
    data = f.read((hi + 7) // 8 - lo // 8)
    return (int.from_bytes(data, "big") >> (len(data) * 8 - (hi - lo // 8 * 8))) & ((1 << (hi - lo)) - 1)


def _block_stream(f, lo: int, hi: int) -> bytes:
    """A one-block bzip2 stream of the block at bits ``lo`` .. ``hi`` (its magic included)."""
    n = hi - lo
    crc = _bits(f, lo + 48, lo + 80)  # the block's CRC, right after its magic, is the one-block stream's
    v = (int.from_bytes(b"BZh9", "big") << n | _bits(f, lo, hi)) << 80 | END_MAGIC << 32 | crc
    total = 32 + n + 80
    return (v << (-total % 8)).to_bytes((total + 7) // 8, "big")


def blocks_from(path: Path, bit: int) -> Iterator[tuple[int, bytes]]:
    """(start bit, decompressed bytes) of each block from the one starting at ``bit`` to the end
    of the file (across later streams too). Raises ``OSError`` naming the offset on bad data."""
    with open(path, "rb") as f:
        lo = bit
        while lo is not None:
            hi, data = lo, None
            for _ in range(_MAX_MERGE):
                hi = next_magic(f, hi + 48, end_too=True)
                if hi is None:
                    raise EOFError(f"bzip2 block at bit {lo}: the stream ends before its end-of-stream marker")
                try:
                    data = bz2.decompress(_block_stream(f, lo, hi))
                    break
                except (OSError, ValueError):
                    continue  # a magic by chance inside this block's data: take the block up to the next one
            if data is None:
                raise OSError(f"bzip2 data at bit {lo} (byte {lo // 8}) does not decompress: not a block start, or corrupt")
            yield lo, data
            lo = hi if _is_block(f, hi) else next_magic(f, hi)  # the next block, or the next stream's first


def _is_block(f, bit: int) -> bool:
    return _bits(f, bit, bit + 48) == BLOCK_MAGIC
