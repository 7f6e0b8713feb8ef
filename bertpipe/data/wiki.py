"""Stream article prose out of MediaWiki XML export dumps (Wikipedia ``pages-articles``).

:func:`iter_wiki_pages` streams a ``.xml`` or ``.xml.bz2`` dump page by page with
:func:`xml.etree.ElementTree.iterparse`, clearing every finished page so memory stays bounded
on multi-GB dumps, or only the whole pages of a byte span of a plain dump (a unit of the
ingest stage, ``bertpipe.data.spans``: of a plain dump, of a multistream or, block by block,
of a single-stream ``.xml.bz2``). It keeps main-namespace (``<ns>0</ns>``)
non-redirect pages, yields the cleaned text of their latest revision
(``bertpipe.data.wikitext.wikitext_to_text``) and counts what it skipped in a
:class:`WikiStats`. "Latest revision" is the last ``<revision>`` of a page in document order,
which is how dumps are written. A truncated or corrupt dump raises :class:`ValueError` once
the bad spot is reached, after the pages before it have been yielded.
"""
from __future__ import annotations

import bz2
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from xml.parsers.expat import ErrorString

from bertpipe.data.bz2blocks import blocks_from
from bertpipe.data.formats import open_binary
from bertpipe.data.spans import Span
from bertpipe.data.wikitext import wikitext_to_text

__all__ = ["WikiPage", "WikiStats", "iter_wiki_pages", "wikitext_to_text"]


@dataclass(frozen=True)
class WikiPage:
    """One article: its dump page id, title and cleaned prose."""

    id: str
    title: str
    text: str


@dataclass
class WikiStats:
    """Counts filled in by :func:`iter_wiki_pages` while it streams."""

    pages: int = 0  # every <page> seen
    articles: int = 0  # pages yielded
    redirects: int = 0
    non_article: int = 0  # <ns> other than 0 (talk, user, file, template, ...)
    empty: int = 0  # articles whose cleaned text is empty


def iter_wiki_pages(path: Path, stats: WikiStats | None = None, span: Span = Span()) -> Iterator[WikiPage]:
    """Yield the main-namespace, non-redirect pages of the dump at ``path``.

    ``path`` may be plain XML or bzip2-compressed (``.bz2`` suffix). If ``stats`` is given it
    is updated as pages stream past. ``span``: only the whole ``<page>`` elements in those
    bytes of a plain XML dump (``bertpipe.data.spans``). Raises :class:`ValueError` naming
    ``path`` on malformed XML, a truncated or corrupt bz2 stream.
    """
    path = Path(path)
    stats = stats if stats is not None else WikiStats()
    compressed = path.name.lower().endswith(".bz2")  # as the span planner and the readers name it
    if span.whole:
        stream: IO[bytes] = open_binary(path)
    elif span.bits:  # bzip2 blocks of a single-stream dump: no file to close, blocks_from opens its own
        stream = io.BufferedReader(_Chunks(_whole_pages(_block_data(path, span))), 1 << 20)
    else:
        raw = path.open("rb")
        stream = io.BufferedReader(_Chunks(_whole_pages(_span_data(raw, span, compressed))), 1 << 20)
        stream.close = raw.close  # type: ignore[method-assign]
    with stream:
        try:
            yield from _iter_dump(stream, stats)
        except ET.ParseError as exc:
            line, column = exc.position
            raise ValueError(
                f"{path}: malformed XML at line {line}, column {column}: {ErrorString(exc.code)}"
            ) from exc
        except EOFError as exc:
            raise ValueError(f"{path}: compressed stream ends early (truncated file?): {exc}") from exc
        except OSError as exc:
            if not compressed or exc.errno is not None:  # a real I/O error, not bad bz2 data
                raise
            raise ValueError(f"{path}: not a valid bzip2 stream: {exc}") from exc


class _Chunks(io.RawIOBase):
    """A file object over an iterator of byte chunks (for ``iterparse``)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.rest = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self.rest:
            self.rest = next(self.chunks, None)
            if self.rest is None:
                self.rest = b""
                return 0
        n = min(len(b), len(self.rest))
        b[:n], self.rest = self.rest[:n], self.rest[n:]
        return n


def _span_data(f: IO[bytes], span: Span, compressed: bool) -> Iterator[tuple[bytes, bool]]:
    """(data, past the span's end) from the span's start to the end of the file: the raw bytes,
    or for a bzip2 file the bytes its streams decompress to (the span starts and ends at streams)."""
    f.seek(span.start)
    pos, d, fed = span.start, bz2.BZ2Decompressor(), False
    while raw := f.read(1 << 20):
        pieces = [(raw, False)]
        if span.end is not None and pos + len(raw) > span.end:
            cut = max(0, span.end - pos)
            pieces = [(raw[:cut], False), (raw[cut:], True)]
        pos += len(raw)
        for piece, past in pieces:
            if not compressed:
                yield piece, past
                continue
            while piece:
                yield d.decompress(piece), past
                piece, fed = b"", True
                if d.eof:  # streams are concatenated: the next one needs a fresh decompressor
                    piece, d, fed = d.unused_data, bz2.BZ2Decompressor(), False
    if fed:
        raise EOFError("the last bzip2 stream is incomplete")


def _block_data(path: Path, span: Span) -> Iterator[tuple[bytes, bool]]:
    """(data, past the span's end) of the bzip2 blocks from the span's first to the file's end."""
    for start, data in blocks_from(path, span.start):
        yield data, span.end is not None and start >= span.end


def _whole_pages(data: Iterator[tuple[bytes, bool]]) -> Iterator[bytes]:
    """A span's pages inside a bare root: from its first ``<page`` to the first ``<page`` that
    starts past the span's end (the next span's first), or to the dump's ``</mediawiki>``. A
    page that straddles the end belongs to this span; the next one skips to its first page."""
    yield b"<mediawiki>"
    buf, pre, started, keep = b"", 0, False, 64  # keep: a tag may straddle two chunks; the end tag is held back
    for chunk, past in data:
        buf += chunk
        pre += 0 if past else len(chunk)
        if not started:
            at = buf.find(b"<page")
            if at < 0 or at >= pre:  # no page starts in the span (yet, or at all)
                if past and at >= 0:
                    yield b"</mediawiki>"
                    return
                drop = max(0, len(buf) - keep)
                buf, pre = buf[drop:], pre - drop
                continue
            buf, pre, started = buf[at:], pre - at, True
        if past:
            at = buf.find(b"<page", max(pre, 0))  # index 0 < pre is this span's own first page
            if at >= 0:
                yield buf[:at]
                yield b"</mediawiki>"
                return
        safe = max(0, min(pre, len(buf) - keep) if not past else len(buf) - keep)
        if safe:
            yield buf[:safe]
            buf, pre = buf[safe:], pre - safe
    if started:
        yield _CLOSE.sub(b"", buf)
    yield b"</mediawiki>"


_CLOSE = re.compile(rb"</mediawiki>\s*$")


def _iter_dump(stream: IO[bytes], stats: WikiStats) -> Iterator[WikiPage]:
    root: ET.Element | None = None
    latest_text = ""
    for event, elem in ET.iterparse(stream, events=("start", "end")):
        if root is None:  # the first event is the start of <mediawiki>
            root = elem
        if event != "end":
            continue
        name = _local_name(elem.tag)
        if name == "revision":
            text_elem = _child(elem, "text")
            latest_text = (text_elem.text if text_elem is not None else None) or ""
            elem.clear()  # full-history dumps: keep only the newest text
        elif name == "page":
            page = _page(elem, latest_text, stats)
            latest_text = ""
            root.clear()  # drop this page (and <siteinfo>) so memory stays bounded
            if page is not None:
                yield page


def _page(elem: ET.Element, raw_text: str, stats: WikiStats) -> WikiPage | None:
    stats.pages += 1
    ns = _child_text(elem, "ns") or "0"  # exports before 0.6 have no <ns>
    if ns.strip() != "0":
        stats.non_article += 1
        return None
    if _child(elem, "redirect") is not None or raw_text.lstrip().lower().startswith("#redirect"):
        stats.redirects += 1
        return None
    text = wikitext_to_text(raw_text)
    if not text:
        stats.empty += 1
        return None
    stats.articles += 1
    return WikiPage(id=_child_text(elem, "id").strip(), title=_child_text(elem, "title"), text=text)


def _local_name(tag: str) -> str:
    """``{http://www.mediawiki.org/xml/export-0.10/}page`` -> ``page``, for any namespace."""
    return tag.rpartition("}")[2]


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in elem if _local_name(c.tag) == name), None)


def _child_text(elem: ET.Element, name: str) -> str:
    child = _child(elem, name)
    return (child.text or "") if child is not None else ""
