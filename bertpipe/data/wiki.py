"""Stream article prose out of MediaWiki XML export dumps (Wikipedia ``pages-articles``).

Two public pieces:

* :func:`iter_wiki_pages` streams a ``.xml`` or ``.xml.bz2`` dump page by page with
  :func:`xml.etree.ElementTree.iterparse`, clearing every finished page so memory stays
  bounded on multi-GB dumps. It keeps main-namespace (``<ns>0</ns>``) non-redirect pages,
  yields the cleaned text of their latest revision and counts what it skipped in a
  :class:`WikiStats`.
* :func:`wikitext_to_text` turns wiki markup into plain paragraphs with ``mwparserfromhell``.

Trade-offs:

* Templates are dropped, never expanded (expansion needs the template pages and a Lua
  runtime). Inline templates that render prose (``{{convert}}``, ``{{lang}}``) are lost with
  them; the leftovers a removal tends to leave, like ``()`` or a space before a full stop,
  are tidied up.
* Tables, galleries, ``<math>``, references and file/category/interlanguage links are
  dropped whole: they are poor prose for language-model pretraining.
* Namespaces are English-only prefixes (``File:``, ``Image:``, ``Media:``, ``Category:``);
  interlanguage links are recognised as lowercase language-code prefixes (``[[de:X]]``).
* List items become one paragraph each; paragraphs are separated by a blank line.
* "Latest revision" is the last ``<revision>`` of a page in document order, which is how
  dumps are written. A truncated or corrupt dump raises :class:`ValueError` once the bad
  spot is reached, after the pages before it have been yielded.
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

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Node,
    Tag,
    Template,
    Text,
    Wikilink,
)
from mwparserfromhell.wikicode import Wikicode

from bertpipe.data.spans import Span

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


# --- wikitext -> prose -------------------------------------------------------------------

# Private-use markers emitted while rendering, resolved when paragraphs are assembled.
_REMOVED = "\x00"  # dropped markup: a line holding only this is not a blank line
_BREAK = "\x01"  # block markup (heading, table, ...) that ends the current paragraph
_ITEM = "\x02"  # start of a list item; the item's line becomes its own paragraph
_MARKERS = re.compile("[\x00-\x02]")

_DROPPED_NAMESPACES = frozenset({"file", "image", "media", "category"})
_INTERLANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]+)*|simple")
_BLOCK_TAGS = frozenset(
    {"table", "gallery", "references", "pre", "syntaxhighlight", "source", "timeline",
     "imagemap", "graph", "mapframe", "score", "hr"}
)
_INLINE_DROPPED_TAGS = frozenset(
    {"ref", "math", "chem", "ce", "hiero", "maplink", "templatestyles", "indicator",
     "categorytree", "style", "script", "noinclude"}
)
_LIST_TAGS = frozenset({"li", "dt", "dd"})
_MAGIC_WORD = re.compile(r"__[A-Z]+__")

_TIDY = [
    (re.compile(r"\s+"), " "),
    (re.compile(r"\(\s*[,;]?\s*\)"), ""),  # "()" left by a removed template
    (re.compile(r"\(\s*[,;]\s*"), "("),  # "(, born 1900)"
    (re.compile(r"\s+([.,;:!?)\]])"), r"\1"),  # "word ." left by a removed ref/template
    (re.compile(r"([(\[])\s+"), r"\1"),
    (re.compile(r" {2,}"), " "),
]


def wikitext_to_text(markup: str) -> str:
    """Return the prose of ``markup``: paragraphs of single-spaced text joined by ``"\\n\\n"``."""
    rendered = _render(mwparserfromhell.parse(_MARKERS.sub("", markup)))
    return "\n\n".join(_paragraphs(rendered))


def _render(code: Wikicode | None) -> str:
    return "" if code is None else "".join(_render_node(node) for node in code.nodes)


def _render_node(node: Node) -> str:
    if isinstance(node, Text):
        return _MAGIC_WORD.sub("", node.value)
    if isinstance(node, HTMLEntity):
        return node.normalize()
    if isinstance(node, Wikilink):
        return _render_wikilink(node)
    if isinstance(node, ExternalLink):
        if node.title is not None and str(node.title).strip():
            return _render(node.title)
        return _REMOVED if node.brackets else str(node.url)  # "[http://x]" shows as "[1]"
    if isinstance(node, Tag):
        return _render_tag(node)
    if isinstance(node, Heading):
        return _BREAK
    if isinstance(node, (Template, Argument, Comment)):
        return _REMOVED
    return str(node)


def _render_wikilink(link: Wikilink) -> str:
    title = str(link.title).strip()
    target = title.lstrip(":").strip()
    prefix, colon, rest = target.partition(":")
    if colon and not title.startswith(":"):  # a leading colon makes it a visible link
        if prefix.strip().lower() in _DROPPED_NAMESPACES or _INTERLANGUAGE.fullmatch(prefix):
            return _REMOVED
    if link.text is None:
        return target
    shown = _render(link.text)
    if shown.strip():
        return shown
    # Pipe trick: [[Help:Foo (bar)|]] shows "Foo".
    name = rest if colon else target
    return re.sub(r"\s*\([^)]*\)$", "", name).strip()


def _render_tag(tag: Tag) -> str:
    name = str(tag.tag).strip().lower()
    if name in _LIST_TAGS and tag.wiki_markup:
        return _ITEM
    if name in _BLOCK_TAGS:
        return _BREAK
    if name in _INLINE_DROPPED_TAGS:
        return _REMOVED
    if name == "br":
        return " "
    if tag.self_closing:
        return _REMOVED
    return _render(tag.contents)  # b, i, span, small, sup, nowiki, blockquote, ...


def _paragraphs(rendered: str) -> list[str]:
    """Group rendered lines into paragraphs: blank lines, block markers and list items
    end a paragraph; a line that held only dropped markup (a template, a category) keeps its
    ``_REMOVED`` marker, so it is not blank and does not split the paragraph around it."""
    blocks: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            blocks.append(" ".join(current))
            current.clear()

    for line in rendered.split("\n"):
        for i, segment in enumerate(line.split(_BREAK)):
            if i:
                flush()
            if segment.lstrip().startswith(_ITEM):
                flush()
                current.append(segment)
                flush()
            elif segment.strip():
                current.append(segment)
            else:  # a blank line
                flush()
    flush()

    paragraphs = []
    for block in blocks:
        text = _MARKERS.sub("", block)
        for pattern, replacement in _TIDY:
            text = pattern.sub(replacement, text)
        if text.strip():
            paragraphs.append(text.strip())
    return paragraphs
