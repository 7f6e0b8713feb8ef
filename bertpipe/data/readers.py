"""Readers that turn one input file of any supported format into raw documents.

Each reader is a generator of ``RawDoc`` (id, title, sentences) and streams its file, so a
multi-GB JSONL or a Wikipedia dump never sits in memory whole. Formats:

- plain text, BERT's format: one sentence per line, a blank line between documents;
- plain prose: paragraphs separated by blank lines, sentences split for you; a run of
  ``doc_break_blank_lines`` blank lines (3 by default, as between chapters of the
  Gutenberg texts) starts a new document;
- JSONL (.jsonl, .ndjson; .gz, .zst; .json.gz / .json.zst as Dolma names them): one object per line; text/id/title field names configurable;
- Parquet: text/id/title column names configurable, read batch by batch;
- MediaWiki XML(.bz2): see ``bertpipe.data.wiki``.

Whether a file is plain text in BERT's line format (``auto``), how its bytes are opened and
its encoding's shape are decided in ``bertpipe.data.formats``, which the span planner uses too,
so a file reads the same whole or cut into spans.

Bad input raises ``InputError`` naming the file, line or byte offset and the field; the
caller decides whether that aborts the run or becomes a counted skip. Plain-text files are
read as bytes line by line so that invalid UTF-8 is reported at its byte offset, or, in
``replace`` mode, replaced with U+FFFD and counted.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from bertpipe.data.formats import Format, codec_name, decide_text_format, open_binary, wide_encoding
from bertpipe.data.spans import Span
from bertpipe.data.text import clean_text, split_paragraphs, split_sentences
from bertpipe.data.wiki import WikiStats, iter_wiki_pages


class InputError(ValueError):
    """A problem with an input file, with enough location to find it."""


@dataclass
class RawDoc:
    id: str
    title: str | None
    sentences: list[str]


@dataclass
class ReadStats:
    """Counters a reader fills while streaming; summed into the stage manifest."""

    records: int = 0
    utf8_replacements: int = 0
    bad_records: int = 0
    wiki_skipped: dict[str, int] = field(default_factory=dict)


class ReadOptions(BaseModel):
    """How a file's bytes become documents; ``IngestConfig`` extends it. Field names are CLI flags."""

    model_config = ConfigDict(extra="forbid")

    text_field: str = Field("text", description="JSONL field / Parquet column holding the text")
    id_field: str = Field("id", description="JSONL field / Parquet column with a document id (optional in the data)")
    title_field: str = Field("title", description="JSONL field / Parquet column with a title (optional in the data)")
    text_format: Literal["auto", "lines", "prose"] = Field(
        "auto",
        description="plain text: 'lines' = BERT format (a sentence per line, blank line between documents); "
        "'prose' = paragraphs, sentences split for you; 'auto' decides per file from its first 400 lines",
    )
    # Gutenberg chapters are separated by 3+ blank lines, paragraphs by one.
    doc_break_blank_lines: int = Field(3, ge=1, description="prose: this many consecutive blank lines start a new document")
    # utf-8 also reads files that start with a UTF-8, UTF-16 or UTF-32 byte-order mark
    encoding: str = Field("utf-8", description="text encoding of plain-text and JSONL inputs for the whole run (e.g. "
                          "latin-1, cp1252); utf-8 also decodes files marked with a UTF-8/16/32 byte-order mark")
    encoding_errors: Literal["strict", "replace"] = Field(
        "strict", description="invalid UTF-8: 'strict' fails naming file and byte offset; 'replace' substitutes U+FFFD and counts"
    )
    on_bad_record: Literal["error", "skip"] = Field(
        "error", description="malformed JSONL/Parquet record: fail naming file and line, or skip and count"
    )
    # Longer "sentences" are cut at whitespace; 2000 chars is ~400 WordPieces, > max_seq_length.
    max_sentence_chars: int = Field(2000, ge=100, description="cut longer sentences at whitespace")


def read_documents(path: Path, fmt: Format, opts: ReadOptions, stats: ReadStats, span: Span = Span()) -> Iterator[RawDoc]:
    """The documents of ``span`` of the file (default: all of it), in file order."""
    readers = {"text": _read_text, "jsonl": _read_jsonl, "parquet": _read_parquet, "wiki": _read_wiki}
    try:
        yield from readers[fmt](path, opts, stats, span)
    except EOFError as e:
        raise InputError(f"{path}: truncated compressed stream ({e})") from e
    except (OSError, gzip.BadGzipFile) as e:
        if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError):
            raise InputError(f"{path}: cannot read ({e.strerror or e})") from e
        raise InputError(f"{path}: corrupt or unreadable file ({e})") from e


_PIECE = 1 << 20  # plain text: a longer line is read in pieces of at most 1 MiB, cut at whitespace


def _bounded(f: IO[bytes], limit: int) -> Iterator[tuple[bytes, bool]]:
    """(bytes, continues the previous line): lines, a longer one in pieces of at most ``limit``
    bytes, cut after whitespace (else at a UTF-8 character boundary), so memory never holds a
    whole long line."""
    rest, cont = b"", False
    while line := rest + (f.readline(limit - len(rest)) if len(rest) < limit else b""):
        rest = b""
        if line.endswith(b"\n") or len(line) < limit:  # a whole line, or the last of the file
            yield line, cont
            cont = False
            continue
        cut = max(line.rfind(b" "), line.rfind(b"\t")) + 1
        if cut <= 0:
            cut = len(line)
            while cut > 1 and line[cut - 1] & 0xC0 == 0x80:  # continuation bytes of a character
                cut -= 1
            cut = cut - 1 if line[cut - 1] >= 0xC0 else len(line)  # before the character's first byte
        yield line[:cut], cont
        rest, cont = line[cut:], True


def _span_lines(f: IO[bytes], span: Span, limit: int | None = None) -> Iterator[tuple[bytes, bool]]:
    """The raw lines of a byte span of ``f``, as (bytes, continues the previous line); with a
    ``limit``, long lines come in pieces (``_bounded``)."""
    if not span.whole:
        f.seek(span.start)
    left = None if span.end is None else span.end - span.start
    for raw, cont in (_bounded(f, limit) if limit else ((line, False) for line in f)):
        if left is not None:
            if left <= 0:
                return
            left -= len(raw)
        yield raw, cont


def _decoded_lines(path: Path, opts: ReadOptions, stats: ReadStats, span: Span = Span()) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line) with decoding errors located or counted."""
    for lineno, line, _ in _decoded(path, opts, stats, span):
        yield lineno, line


def _decoded(path: Path, opts: ReadOptions, stats: ReadStats, span: Span = Span(),
             limit: int | None = None) -> Iterator[tuple[int, str, bool]]:
    """(line number, decoded line or piece, continues the previous line)."""
    if wide := wide_encoding(path, opts.encoding):
        for lineno, line in _wide_lines(path, wide, opts, stats):
            yield lineno, line, False
        return
    encoding = opts.encoding if codec_name(opts.encoding) != "utf-8" else "utf-8"
    offset, name, lineno = span.start, codec_name(encoding).upper().replace("_", "-"), span.first_line - 1
    with open(span.staged, "rb") if span.staged else open_binary(path) as f:  # staged: the decompressed copy
        for raw, cont in _span_lines(f, span, limit):
            lineno += not cont
            if lineno == 1 and not cont and raw.startswith(codecs.BOM_UTF8) and encoding == "utf-8":
                raw, offset = raw[len(codecs.BOM_UTF8):], offset + len(codecs.BOM_UTF8)  # a UTF-8 mark is not text
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as e:
                if opts.encoding_errors == "strict":
                    raise InputError(
                        f"{path}: invalid {name} at byte offset {offset + e.start} (line {lineno}); pass "
                        "--encoding-errors replace to substitute U+FFFD and count replacements, or --encoding"
                    ) from None
                line = raw.decode(encoding, errors="replace")
                stats.utf8_replacements += line.count("\ufffd") - raw.count("\ufffd".encode())
            offset += len(raw)
            yield lineno, line, cont


def _wide_lines(path: Path, codec: str, opts: ReadOptions, stats: ReadStats) -> Iterator[tuple[int, str]]:
    """Lines of a UTF-16/32 file, decoded as one stream (its newlines span several bytes)."""
    lineno = 0
    with open_binary(path) as raw, io.TextIOWrapper(raw, encoding=codec, errors=opts.encoding_errors, newline="") as f:
        try:
            for lineno, line in enumerate(f, 1):
                if opts.encoding_errors == "replace":
                    stats.utf8_replacements += line.count("\ufffd")
                yield lineno, line
        except UnicodeDecodeError:
            raise InputError(f"{path}: invalid {codec.upper()} after line {lineno}; pass --encoding-errors replace "
                             "to substitute U+FFFD and count replacements") from None


def _read_text(path: Path, opts: ReadOptions, stats: ReadStats, span: Span = Span()) -> Iterator[RawDoc]:
    mode = span.text_format or opts.text_format
    if mode == "auto":  # as the span planner decides it for the spans of this file
        mode = decide_text_format(path, opts.encoding)
    stem = path.name
    first_line = 0  # of the current document: its id, the same whichever span reads it
    block: list[str] = []  # lines of the current paragraph (prose) or document (lines)
    block_chars = 0  # flushed early past _PIECE: a paragraph of megabytes is split in bounded pieces
    doc_sentences: list[str] = []
    blanks = 0

    def flush_block() -> None:
        nonlocal block_chars
        block_chars = 0
        if not block:
            return
        text = clean_text("\n".join(block))  # one call per paragraph/document, not per line
        if mode == "lines":
            for ln in text.split("\n"):
                if ln := ln.strip():
                    doc_sentences.extend(split_sentences(ln, opts.max_sentence_chars) if len(ln) > opts.max_sentence_chars else [ln])
        else:
            doc_sentences.extend(split_sentences(text, opts.max_sentence_chars))
        block.clear()

    for lineno, line, cont in _decoded(path, opts, stats, span, limit=_PIECE):
        if line.isspace() or not line:
            blanks += 1
            continue
        if blanks:
            flush_block()
            doc_ends = mode == "lines" or blanks >= opts.doc_break_blank_lines
            if doc_ends and doc_sentences:
                yield RawDoc(f"{stem}:{first_line}", None, doc_sentences)
                doc_sentences = []
            blanks = 0
        if not doc_sentences and not block:
            first_line = lineno
        block.append(line.rstrip("\r\n"))
        block_chars += len(line)
        if block_chars > _PIECE:
            flush_block()
        stats.records += not cont
    flush_block()
    if doc_sentences:
        yield RawDoc(f"{stem}:{first_line}", None, doc_sentences)


def _split_record(text: str, opts: ReadOptions) -> list[str]:
    text = clean_text(text)
    if opts.text_format == "lines":
        return [s for ln in text.split("\n") if (s := ln.strip())]
    return [s for para in split_paragraphs(text) for s in split_sentences(para, opts.max_sentence_chars)]


def _read_jsonl(path: Path, opts: ReadOptions, stats: ReadStats, span: Span = Span()) -> Iterator[RawDoc]:
    for lineno, line in _decoded_lines(path, opts, stats, span):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            text = obj.get(opts.text_field)
            if not isinstance(text, str):
                raise InputError(
                    f"{path}:{lineno}: field '{opts.text_field}' is "
                    + ("missing" if text is None else f"a {type(text).__name__}, not a string")
                    + f" (fields present: {', '.join(sorted(obj)) or 'none'}); set --text-field"
                )
        except json.JSONDecodeError as e:
            err = InputError(f"{path}:{lineno}: invalid JSON at column {e.colno}: {e.msg}")
            if opts.on_bad_record == "error":
                raise err from None
            stats.bad_records += 1
            continue
        except InputError:
            if opts.on_bad_record == "error":
                raise
            stats.bad_records += 1
            continue
        stats.records += 1
        doc_id = obj.get(opts.id_field)
        title = obj.get(opts.title_field)
        yield RawDoc(
            str(doc_id) if doc_id is not None else f"{path.name}:{lineno}",
            str(title) if title is not None else None,
            _split_record(text, opts),
        )


def _read_parquet(path: Path, opts: ReadOptions, stats: ReadStats, span: Span = Span()) -> Iterator[RawDoc]:
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid for non-Parquet bytes
        raise InputError(f"{path}: not a readable Parquet file ({e})") from e
    names = pf.schema_arrow.names
    if opts.text_field not in names:
        raise InputError(f"{path}: no column '{opts.text_field}' (columns: {', '.join(names)}); set --text-field")
    cols = [c for c in (opts.text_field, opts.id_field, opts.title_field) if c in names]
    row = span.first_line - 1
    groups = range(span.start, pf.metadata.num_row_groups if span.end is None else span.end)
    for batch in pf.iter_batches(batch_size=1024, columns=cols, row_groups=list(groups)):
        data = batch.to_pydict()
        texts = data[opts.text_field]
        ids = data.get(opts.id_field, [None] * len(texts))
        titles = data.get(opts.title_field, [None] * len(texts))
        for text, doc_id, title in zip(texts, ids, titles, strict=True):
            row += 1
            if not isinstance(text, str):
                if opts.on_bad_record == "error" and text is not None:
                    raise InputError(f"{path}: row {row}: column '{opts.text_field}' is not a string")
                stats.bad_records += 1
                continue
            stats.records += 1
            yield RawDoc(
                str(doc_id) if doc_id is not None else f"{path.name}:{row}",
                str(title) if title is not None else None,
                _split_record(text, opts),
            )


def _read_wiki(path: Path, opts: ReadOptions, stats: ReadStats, span: Span = Span()) -> Iterator[RawDoc]:
    wstats = WikiStats()
    for page in iter_wiki_pages(path, wstats, span):
        stats.records += 1
        sentences = _split_record(page.text, opts)
        yield RawDoc(page.id, page.title, sentences)
    stats.wiki_skipped = {k: v for k, v in vars(wstats).items() if k != "pages"}
