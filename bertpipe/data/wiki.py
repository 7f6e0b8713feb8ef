"""Stream article prose out of MediaWiki XML export dumps (Wikipedia ``pages-articles``).

:func:`iter_wiki_pages` streams a ``.xml`` or ``.xml.bz2`` dump page by page with
:func:`xml.etree.ElementTree.iterparse`, clearing every finished page so memory stays bounded
on multi-GB dumps, or only the whole pages of a byte span of a plain dump (a unit of the
ingest stage, ``bertpipe.data.spans``). It keeps main-namespace (``<ns>0</ns>``)
non-redirect pages, yields the cleaned text of their latest revision
(``bertpipe.data.wikitext.wikitext_to_text``) and counts what it skipped in a
:class:`WikiStats`. "Latest revision" is the last ``<revision>`` of a page in document order,
which is how dumps are written. A truncated or corrupt dump raises :class:`ValueError` once
the bad spot is reached, after the pages before it have been yielded.
"""
from __future__ import annotations

import bz2
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from xml.parsers.expat import ErrorString

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
    compressed = path.suffix == ".bz2"
    stream: IO[bytes] = bz2.open(path, "rb") if compressed else path.open("rb")
    if not span.whole:
        stream = _PagesOnly(stream, span)
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


class _PagesOnly(io.RawIOBase):
    """The bytes of a span of whole ``<page>`` elements, inside a bare ``<mediawiki>`` root."""

    def __init__(self, f: IO[bytes], span: Span) -> None:
        self.f, self.head, self.tail = f, b"<mediawiki>", b"</mediawiki>"
        f.seek(span.start)
        self.left = None if span.end is None else span.end - span.start

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head:
            chunk, self.head = self.head[: len(b)], self.head[len(b):]
        elif self.left != 0:
            chunk = self.f.read(len(b) if self.left is None else min(len(b), self.left))
            if self.left is not None:
                self.left -= len(chunk)
            if not chunk:
                self.left = 0
                return self.readinto(b)
        else:
            chunk, self.tail = self.tail[: len(b)], self.tail[len(b):]
        b[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        self.f.close()
        super().close()


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
