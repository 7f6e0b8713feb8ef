"""Units inside one input file, so that a single large file is read by many workers.

``plan_spans`` cuts an input into ``Span``s of about ``UNIT_BYTES`` that each hold whole
records, found by a short scan forward from each cut point:

- plain text: a cut sits at the first non-blank line after a run of blank lines that ends a
  document (one blank line in BERT's ``lines`` format, ``doc_break_blank_lines`` in prose);
  ``auto`` format is decided once per file here, from its first 400 lines in the run's encoding,
  and fixed for every span, by the rule a whole-file read uses (``bertpipe.data.formats``);
- JSONL: at a line start;
- MediaWiki XML: at a ``<page>`` start (spans hold whole pages; the reader wraps them in a root);
  a multistream ``.xml.bz2`` (Wikipedia's own format) at a bzip2 stream start, a single-stream
  one (``pages-articles.xml.bz2``) at a bzip2 block start (``bertpipe.data.bz2blocks``; the
  span's offsets are then bits);
- Parquet: at a row-group boundary (spans count row groups, not bytes).

A large ``.gz``, ``.zst`` or bzip2 JSONL or text file (one stream: no entry points; the
format has no blocks to find, or finding them means decompressing) is decompressed once by
``stage_decompressed`` into a copy in the stage's work folder, then cut like a plain file:
its spans read the copy, with the compressed file's name and line numbers. The copy costs
disk (the decompressed size, deleted when the stage publishes) and one serial decompression
(about 1 s per 300 MB for gzip, less for Zstandard), in exchange for exact line numbers and
units that start anywhere.

Each span carries the line (or row) number it starts at, counted here, so errors and ids
name the same line as a whole-file read would. Reading the spans of a file in order yields
exactly the documents a whole-file read yields, in the same order: the cut points are record
boundaries that the whole-file read also ends a record at. Other compressed files stay one span
unless staged (below).

``UNIT_BYTES`` (4 MiB) is a fixed constant, not an option: one unit makes one part of the ingest
output, so the unit size is part of what the output is. The scan costs a read of each cut
point's neighbourhood plus a newline count over the file (a few GB/s).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from bertpipe.data.bz2blocks import next_magic
from bertpipe.data.formats import compressed, decide_text_format, open_binary

UNIT_BYTES = 4 << 20  # 4 MiB of input per unit: about half a second of work, bounded memory, units enough to balance workers
_SCAN = 1 << 20
_PAGE = re.compile(rb"<page[\s>]")
# a bzip2 stream header ("BZh" + block size) followed by the first block's magic (the BCD digits of pi),
# byte-aligned only at stream starts; a false match inside compressed data has odds of about 2**-72
_BZ2_STREAM = re.compile(rb"BZh[1-9]\x31\x41\x59\x26\x53\x59")


@dataclass(frozen=True)
class Span:
    """A piece of an input file: bytes ``start``..``end`` (None: to the end), or for Parquet the
    row groups ``start``..``end``; ``first_line`` is the 1-based line (Parquet: row) number at ``start``."""

    start: int = 0
    end: int | None = None
    first_line: int = 1
    text_format: str | None = None  # plain text: the format decided for the whole file
    bits: bool = False  # start and end are the bit offsets of bzip2 blocks (a single-stream .bz2)
    staged: str | None = None  # a compressed file's decompressed copy that the span's offsets are in

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end is None


def plan_spans(path: Path, fmt: str, text_format: str, doc_break_blank_lines: int, unit_bytes: int | None = None,
               encoding: str = "utf-8") -> list[Span]:
    """The spans of one input file (one whole-file span when it is small or compressed);
    ``encoding``: the run's (``ReadOptions.encoding``), for deciding ``auto`` as the reader does."""
    unit_bytes = unit_bytes or UNIT_BYTES
    if fmt == "parquet":
        return _parquet_spans(path, unit_bytes)
    mode = text_format
    if fmt == "text" and mode == "auto":
        mode = decide_text_format(path, encoding)
    size = path.stat().st_size
    if fmt == "wiki" and path.name.lower().endswith(".bz2") and size > unit_bytes:
        return _bz2_stream_spans(path, size, unit_bytes)
    if compressed(path) or size <= unit_bytes:
        return [Span(text_format=mode if fmt == "text" else None)]
    find = {"jsonl": _next_line, "wiki": _next_page}.get(fmt) or (
        lambda f, pos: _next_document(f, pos, 1 if mode == "lines" else doc_break_blank_lines))
    cuts: list[int] = []
    with open(path, "rb") as f:
        first = _next_page(f, 0) if fmt == "wiki" else 0  # wiki: the first page, after <siteinfo>
        if first is None:
            return [Span()]
        cuts.append(first)
        for target in range(unit_bytes, size, unit_bytes):
            if target <= cuts[-1]:
                continue
            cut = find(f, target)
            if cut is None:
                break
            if cut > cuts[-1]:
                cuts.append(cut)
        end = _last_page_end(f, size) if fmt == "wiki" else None
        lines = _line_numbers(f, cuts)
    bounds = cuts[1:] + [end]
    return [Span(start, stop, line, mode if fmt == "text" else None)
            for start, stop, line in zip(cuts, bounds, lines, strict=True)]


def _next_line(f, pos: int) -> int | None:
    """The start of the first line after byte ``pos``."""
    f.seek(pos - 1)
    f.readline()  # the rest of the line holding pos - 1 (empty if pos starts a line)
    at = f.tell()
    return at if f.read(1) else None


def _next_document(f, pos: int, blanks_needed: int) -> int | None:
    """The start of the first non-blank line after ``blanks_needed`` whole blank lines, past ``pos``."""
    at = _next_line(f, pos)
    if at is None:
        return None
    f.seek(at)
    blanks = 0
    while line := f.readline():
        if line.isspace():
            blanks += 1
        else:
            if blanks >= blanks_needed:
                return at
            blanks = 0
        at += len(line)
    return None


def _next_page(f, pos: int) -> int | None:
    """The offset of the first ``<page>`` start tag at or after ``pos``."""
    return _next_match(f, pos, _PAGE)


def _last_page_end(f, size: int) -> int:
    """Where the pages end: the ``</mediawiki>`` closing tag (the file's end if it has none)."""
    f.seek(max(0, size - _SCAN))
    tail = f.read()
    at = tail.rfind(b"</mediawiki>")
    return size if at < 0 else size - len(tail) + at


def _line_numbers(f, offsets: list[int]) -> list[int]:
    """1-based line numbers at ascending byte ``offsets``, by counting newlines."""
    f.seek(0)
    out, line, pos = [], 1, 0
    for target in offsets:
        while pos < target:
            block = f.read(min(_SCAN * 8, target - pos))
            line += block.count(b"\n")
            pos += len(block)
        out.append(line)
    return out


def _bz2_stream_spans(path: Path, size: int, unit_bytes: int) -> list[Span]:
    """Spans of a multistream ``.xml.bz2`` (as Wikipedia publishes them: streams of 100 pages),
    cut at stream starts; the reader decompresses a span's streams, and the streams after it
    up to the next page start, so streams need not hold whole pages. A single-stream file is one span."""
    cuts = [0]
    with open(path, "rb") as f:
        for target in range(unit_bytes, size, unit_bytes):
            if target <= cuts[-1]:
                continue
            at = _next_match(f, target, _BZ2_STREAM)
            if at is None:
                break
            if at > cuts[-1]:
                cuts.append(at)
    if len(cuts) > 1:
        return [Span(a, b) for a, b in zip(cuts, cuts[1:] + [None], strict=True)]
    return _bz2_block_spans(path, size, unit_bytes)


def _bz2_block_spans(path: Path, size: int, unit_bytes: int) -> list[Span]:
    """Spans of a single-stream ``.bz2`` cut at the first block start after every ``unit_bytes``
    of compressed input (bit offsets); the reader decompresses a span's blocks and the blocks
    after it up to the next page start."""
    with open(path, "rb") as f:
        first = next_magic(f, 0)
        if first is None:
            return [Span()]  # not bzip2 data: the whole-file read reports it
        cuts = [first]
        for target in range(unit_bytes, size, unit_bytes):
            if target * 8 <= cuts[-1]:
                continue
            if (at := next_magic(f, target * 8)) is None:
                break
            cuts.append(at)
    return [Span(a, b, bits=True) for a, b in zip(cuts, cuts[1:] + [None], strict=True)] if len(cuts) > 1 else [Span()]


def _next_match(f, pos: int, pattern: re.Pattern) -> int | None:
    f.seek(pos)
    carry, base = b"", pos
    while block := f.read(_SCAN):
        buf = carry + block
        if m := pattern.search(buf):
            return base - len(carry) + m.start()
        carry = buf[-16:]
        base += len(block)
    return None


def _parquet_spans(path: Path, unit_bytes: int) -> list[Span]:
    meta = pq.ParquetFile(path).metadata
    spans, start, size, row, first = [], 0, 0, 1, 1
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        if size and size + rg.total_byte_size > unit_bytes:
            spans.append(Span(start, g, first))
            start, size, first = g, 0, row
        size += rg.total_byte_size
        row += rg.num_rows
    spans.append(Span(start, None, first))
    return spans if len(spans) > 1 else [Span()]


def stageable(path: Path, fmt: str, unit_bytes: int | None = None) -> bool:
    """Whether ``path`` is a compressed JSONL or text file large enough to be staged and cut."""
    return fmt in ("jsonl", "text") and compressed(path) and path.stat().st_size > (unit_bytes or UNIT_BYTES)


def stage_decompressed(path: Path, dest: Path) -> Path:
    """Decompress ``path`` into ``dest`` (``bertpipe.data.formats.open_binary``'s bytes)."""
    with open_binary(path) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    return dest
