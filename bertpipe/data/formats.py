"""What an input file is, decided once for everyone who reads it: its format, how its bytes
are opened, its encoding's shape, and for plain text whether it is BERT's line format.

The span planner (``bertpipe.data.spans``) and the readers (``bertpipe.data.readers``) must
judge a file the same way, or a file cut into spans would read differently from the same
file read whole. So the rules live here, below both, and take the run's configured
``encoding`` (``ReadOptions.encoding``): a cp1252 file whose sentences end in curly quotes is
judged on those quotes, not on the U+FFFD a UTF-8 decoding would make of them. This module
imports nothing from ``bertpipe``; the data modules form a DAG with every import at the top
(formats <- spans <- wiki <- readers <- ingest).

``decide_text_format`` reads the file's first ``HEAD_LINES`` lines a second time (the reader
streams the file again after deciding): a few hundred lines, against a file read in full.
Invalid bytes are replaced for the judgement only, so it never fails where the read itself
reports the error at its byte offset (strict mode). A line longer than 1 MiB is read in
pieces, keeping only its last non-blank character, which is all the rule looks at.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

Format = Literal["text", "jsonl", "parquet", "wiki"]
TextFormat = Literal["lines", "prose"]
HEAD_LINES = 400  # ``auto`` decides a plain-text file from this many lines at its start
_TERMINAL = re.compile(r"[.!?:;\"'”’)\]]\s*$")
_PIECE = 1 << 20


def detect_format(path: Path) -> Format | None:
    """The format a file name announces (None: not one the ingest stage reads)."""
    name = path.name.lower()
    # .json.gz / .json.zst: Dolma's and many dumps' names for JSON lines
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.bz2", ".ndjson", ".ndjson.gz", ".json.gz", ".json.zst",
                      ".json.bz2")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".xml", ".xml.bz2")):
        return "wiki"
    if name.endswith((".txt", ".txt.gz", ".txt.bz2", ".txt.zst", ".text")):
        return "text"
    return None


def compressed(path: Path) -> bool:
    return path.name.lower().endswith((".gz", ".bz2", ".zst"))


def open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed when its name ends in ``.gz``, ``.bz2`` or ``.zst``."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".zst"):
        return io.BufferedReader(_ZstdReader(path), buffer_size=1 << 20)
    return open(path, "rb")


class _ZstdReader(io.RawIOBase):
    """A Zstandard file's bytes, frame after frame (as ``zstd -d`` reads concatenated frames).
    Unlike ``zstandard``'s stream reader, a stream that ends inside a frame raises ``EOFError``
    (as gzip and bz2 do) instead of ending quietly."""

    def __init__(self, path: Path) -> None:
        import zstandard  # the only user of the dependency

        self._file, self._new, self._error = open(path, "rb"), zstandard.ZstdDecompressor().decompressobj, zstandard.ZstdError
        self._obj, self._out, self._pos, self._mid_frame = self._new(), b"", 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while self._pos == len(self._out):
            chunk = self._file.read(1 << 20)
            if not chunk:
                if self._mid_frame:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
                return 0
            parts = []
            while chunk:
                try:
                    parts.append(self._obj.decompress(chunk))
                except self._error as e:  # as gzip's BadGzipFile: an OSError the readers report by file
                    raise OSError(f"corrupt Zstandard data: {e}") from e
                self._mid_frame = not self._obj.eof
                chunk = self._obj.unused_data if self._obj.eof else b""
                if self._obj.eof:
                    self._obj = self._new()
            self._out, self._pos = b"".join(parts), 0
        n = min(len(buf), len(self._out) - self._pos)
        buf[:n] = memoryview(self._out)[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


# longest first: the UTF-32 LE mark starts with the UTF-16 LE one
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]


def byte_order_mark(path: Path) -> str | None:
    """The codec a file's byte-order mark names (utf-8-sig, utf-16, utf-32), or None."""
    try:
        with open_binary(path) as f:
            head = f.read(4)
    except (OSError, EOFError):
        return None
    return next((codec for bom, codec in _BOMS if head.startswith(bom)), None)


def codec_name(encoding: str) -> str:
    return codecs.lookup(encoding).name


def wide_encoding(path: Path, encoding: str) -> str | None:
    """The codec when the file's newlines are not the single byte ``\\n`` (UTF-16/32, marked, or
    the run's ``encoding``), else None: such files are decoded as one stream, never split."""
    codec = byte_order_mark(path) if codec_name(encoding) == "utf-8" else encoding
    if codec is None or codec == "utf-8-sig":
        return None
    return codec if len("\n".encode(codec)) > 1 else None


def is_binary(path: Path, encoding: str = "utf-8") -> bool:
    """A NUL byte in the first 8 KiB (after decompression) marks a file as binary, unless it is
    text in a UTF-16/32 encoding (marked, or the run's ``encoding``)."""
    if wide_encoding(path, encoding):
        return False
    try:
        with open_binary(path) as f:
            return b"\x00" in f.read(8192)
    except (OSError, EOFError):
        return False  # let the reader report the corruption with its own message


def looks_like_lines(sample: list[str]) -> bool:
    """BERT format if most non-blank lines end like a sentence; wrapped prose rarely does."""
    lines = [ln for ln in sample if ln.strip()]
    if not lines:
        return False
    ending = sum(1 for ln in lines if _TERMINAL.search(ln))
    return ending / len(lines) >= 0.6


def decide_text_format(path: Path, encoding: str = "utf-8") -> TextFormat:
    """``auto`` for a plain-text file: 'lines' (BERT's format) or 'prose', from its first
    ``HEAD_LINES`` lines decoded in the run's ``encoding``; the same for every span of the file."""
    return "lines" if looks_like_lines(list(_line_ends(path, encoding))) else "prose"


def _last_char(text: str) -> str:
    text = text.rstrip()
    return text[-1] if text else ""


def _line_ends(path: Path, encoding: str) -> Iterator[str]:
    """The last non-blank character of each of the first ``HEAD_LINES`` lines ('' for a blank
    line): on these ``looks_like_lines`` judges as it would on the whole lines."""
    if wide := wide_encoding(path, encoding):
        with open_binary(path) as raw, io.TextIOWrapper(raw, encoding=wide, errors="replace", newline="") as f:
            yield from map(_last_char, itertools.islice(f, HEAD_LINES))
        return
    codec = "utf-8" if codec_name(encoding) == "utf-8" else encoding
    with open_binary(path) as f:
        for _ in range(HEAD_LINES):
            piece = f.readline(_PIECE)
            if not piece:
                return
            decoder = codecs.getincrementaldecoder(codec)(errors="replace")
            last = _last_char(decoder.decode(piece))
            while not piece.endswith(b"\n") and (piece := f.readline(_PIECE)):
                last = _last_char(decoder.decode(piece)) or last
            yield _last_char(decoder.decode(b"", final=True)) or last
