"""Test inputs for the data benchmarks: a MediaWiki dump and a JSONL corpus of any size, from real text.

No dump can be downloaded here, so ``write_dump`` builds one in the export-0.10 format that
Wikipedia's ``pages-articles`` dumps use: real prose (the shared Gutenberg novels and State of
the Union addresses; the tests' corpus slice when those are absent), cut into articles with
sections, and wrapped in the wikitext markup real articles carry: infoboxes with nested
templates and parser functions, citation references (named, reused, self-closing), tables with
``bgcolor``/``colspan``/``rowspan`` attributes and captions, piped and plain links, file links
whose captions hold links, categories and interlanguage links, headings, bold and italic,
bulleted and numbered lists, HTML entities, comments, external links, ``<math>``, magic words,
and now and then an unclosed ``<ref>``, template or table, as editors leave them; plus
redirects and talk pages that an article filter must skip. Markup is XML-escaped as in
real dumps. Everything is drawn from ``random.Random(seed)``: the same arguments give the same
bytes. ``write_jsonl`` writes the same kind of prose as ``{"id", "title", "text"}`` records.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

from benchmarks.paths import CORPORA, FIXTURES

SHARED = CORPORA
TESTS = FIXTURES / "corpus"

HEAD = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <generator>bertpipe bench wikidump</generator>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="6" case="first-letter">File</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
"""
SECTIONS = ["History", "Background", "Economy", "Geography", "Reception", "Legacy", "Plot", "Themes", "Politics",
            "Early life", "Later years", "Culture", "Analysis", "Development"]


def paragraphs(sources: list[Path] | None = None) -> list[str]:
    """The real prose the generators draw from: paragraphs of at least 30 words."""
    import gzip

    if sources is None:
        sources = sorted(SHARED.glob("gutenberg/*.txt")) + [SHARED / "sotu.jsonl.gz"] if SHARED.is_dir() else sorted(TESTS.iterdir())
    out = []
    for src in sources:
        if src.name.endswith(".jsonl.gz"):
            with gzip.open(src, "rt", encoding="utf-8") as f:
                for line in f:
                    words = json.loads(line)["text"].split()
                    out += [" ".join(words[i : i + 120]) for i in range(0, len(words), 120)]
        else:
            out += [" ".join(p.split()) for p in src.read_text(encoding="utf-8").split("\n\n")]
    control = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not allowed in XML; a few stray ones in the sources
    return [control.sub("", p) for p in out if len(p.split()) >= 30 and "&" not in p and "<" not in p]


class _Article:
    """Wikitext of one article around real paragraphs (see the module docstring for the markup)."""

    def __init__(self, rng: random.Random, title: str, paras: list[str], ref_base: int) -> None:
        self.rng, self.title, self.paras, self.refs = rng, title, paras, ref_base

    def word_markup(self, text: str) -> str:
        r, words = self.rng, text.split(" ")
        for i in range(0, len(words), r.randint(6, 14)):
            w = words[i]
            if not w.isalpha():
                continue
            kind = r.random()
            if kind < 0.35:
                words[i] = f"[[{w}]]"
            elif kind < 0.55:
                words[i] = f"[[{w.capitalize()} (disambiguation)|{w}]]"
            elif kind < 0.65:
                words[i] = f"''{w}''"
            elif kind < 0.70:
                words[i] = f"'''{w}'''"
            elif kind < 0.75:
                words[i] = f"{w}&nbsp;{{{{convert|{r.randint(2, 900)}|km|mi|abbr=on}}}}"
            elif kind < 0.80:
                words[i] = f"{{{{lang|fr|{w}}}}}"
            elif kind < 0.85:
                words[i] = f"[https://example.org/{r.randint(1, 10**6)} {w}]"
            elif kind < 0.88:
                words[i] = f"{w} &ndash; <!-- check this -->"
        return " ".join(words)

    def ref(self) -> str:
        r = self.rng
        self.refs += 1
        if r.random() < 0.25 and self.refs > 1:
            return f'<ref name="r{r.randint(max(1, self.refs - 5), self.refs - 1)}" />'
        cite = r.choice(["cite web", "cite book", "cite journal", "cite news"])
        inner = (f"{{{{{cite} |title={self.title} {r.randint(1, 99)} |url=https://example.org/{self.refs} "
                 f"|date={{{{Date|{r.randint(1800, 2020)}}}}} |publisher=[[Example Press]] |access-date=2024-01-0{r.randint(1, 9)}}}}}")
        return f'<ref name="r{self.refs}">{inner}</ref>' if r.random() < 0.7 else f"<ref>{inner}</ref>"

    def paragraph(self, text: str) -> str:
        sentences = text.split(". ")
        out = []
        for s in sentences:
            out.append(self.word_markup(s) + (self.ref() if self.rng.random() < 0.25 else ""))
        return ". ".join(out)

    def infobox(self) -> str:
        r = self.rng
        return ("{{Infobox settlement\n"
                f"| name = {self.title}\n| image = Photo_{r.randint(1, 999)}.jpg\n"
                f"| established = {{{{Start date|{r.randint(1500, 1950)}|{r.randint(1, 12)}|{r.randint(1, 28)}}}}}\n"
                f"| population = {{{{#expr: {r.randint(100, 9999)} * 1000 round 0}}}}{self.ref()}\n"
                f"| leader = [[{self.title} Council|council]]\n"
                "| coordinates = {{coord|51|30|N|0|7|W|display=inline,title}}\n}}\n")

    def table(self) -> str:
        r = self.rng
        rows = "".join(f'|-\n| bgcolor="#{r.randint(0, 0xFFFFFF):06x}" | {1800 + i} || {r.randint(1, 10**5):,} '
                       f'|| rowspan="{r.randint(1, 2)}" | [[{r.choice(SECTIONS)}]]{self.ref() if r.random() < 0.3 else ""}\n'
                       for i in range(r.randint(2, 6)))
        return (f'{{| class="wikitable sortable" style="text-align:center"\n|+ {self.title} by year\n|-\n'
                f'! Year !! colspan="2" | Figures\n{rows}|}}\n')

    def media(self) -> str:
        r = self.rng
        return (f"[[File:Photo_{r.randint(1, 9999)}.jpg|thumb|{r.choice(['left', 'right'])}|upright=1.2|A view of "
                f"[[{self.title}]] in {r.randint(1800, 2000)}, from the ''[[Illustrated News]]'']]\n")

    def listing(self, text: str) -> str:
        mark = self.rng.choice(["*", "#"])
        return "".join(f"{mark} {self.word_markup(s)}.\n" for s in text.split(". ")[:4] if s)

    def render(self) -> str:
        r = self.rng
        out = ["{{Short description|An article about " + self.title + "}}\n", "{{Use dmy dates|date=March 2024}}\n"]
        if r.random() < 0.6:
            out.append(self.infobox())
        out.append(f"'''{self.title}''' is " + self.paragraph(self.paras[0]) + "\n\n__TOC__\n")
        for i, p in enumerate(self.paras[1:], 1):
            if i % 3 == 1:
                out.append(f"\n== {r.choice(SECTIONS)} ==\n" + ("{{Main|" + r.choice(SECTIONS) + " of " + self.title + "}}\n"
                                                               if r.random() < 0.3 else ""))
            roll = r.random()
            if roll < 0.12:
                out.append(self.table())
            elif roll < 0.22:
                out.append(self.media())
            elif roll < 0.27:
                out.append(f"<math>x_{i} = \\frac{{{i}}}{{2}}</math>\n")
            if roll > 0.995:  # unbalanced markup, as editors leave it: it must not swallow the rest of the article
                out.append(r.choice(["<ref>an unclosed citation ", "{{Citation needed|date=May 2020 ", "{| class=wikitable\n"]))
            out.append(self.listing(p) if roll > 0.9 else self.paragraph(p) + "\n\n")
        out.append("\n== References ==\n{{Reflist}}\n\n== External links ==\n"
                   f"* [https://example.org/{self.title.replace(' ', '_')} Official site]\n\n{{{{Authority control}}}}\n"
                   f"[[Category:{r.choice(SECTIONS)}]]\n[[Category:Places in {self.title.split()[0]}]]\n"
                   f"[[de:{self.title}]]\n[[fr:{self.title}]]\n")
        return "".join(out)


def _page(page_id: int, title: str, ns: int, text: str, redirect: str | None = None) -> str:
    red = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n{red}"
            f"    <revision>\n      <id>{page_id * 10}</id>\n      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
            f'      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>\n'
            "    </revision>\n  </page>\n")


def _articles(rng: random.Random, paras: list[str]) -> Iterator[tuple[str, list[str]]]:
    n, seen = 0, set()
    while True:
        k = rng.randint(3, 40)  # 100 to 5,000 words
        start = rng.randrange(len(paras))
        if (start, k) in seen:  # every article a different stretch of prose: no exact duplicates
            continue
        seen.add((start, k))
        n += 1
        words = [w.strip(".,;:!?\"'()") for w in paras[start].split()[:3]]
        yield f"{' '.join(w.capitalize() for w in words if w)} {n}", [paras[(start + i) % len(paras)] for i in range(k)]


def write_dump(path: Path, target_bytes: int, seed: int = 0) -> dict[str, int]:
    """A MediaWiki XML dump of at least ``target_bytes`` (see the module docstring)."""
    rng, paras = random.Random(seed), paragraphs()
    counts = {"pages": 0, "articles": 0, "redirects": 0, "talk": 0, "bytes": 0}
    with open(path, "w", encoding="utf-8") as f:
        f.write(HEAD)
        refs = 0
        for title, body in _articles(rng, paras):
            counts["pages"] += 1
            roll = rng.random()
            if roll < 0.05:
                text = _page(counts["pages"], title, 0, f"#REDIRECT [[{title} (place)]]", f"{title} (place)")
                counts["redirects"] += 1
            elif roll < 0.10:
                text = _page(counts["pages"], f"Talk:{title}", 1, "== Sources ==\n" + body[0] + " ~~~~")
                counts["talk"] += 1
            else:
                article = _Article(rng, title, body, refs)
                text = _page(counts["pages"], title, 0, article.render())
                refs = article.refs % 10_000
                counts["articles"] += 1
            f.write(text)
            counts["bytes"] += len(text.encode())
            if counts["bytes"] >= target_bytes:
                break
        f.write("</mediawiki>\n")
    return counts


def write_jsonl(path: Path, target_bytes: int, seed: int = 0) -> dict[str, int]:
    """A JSONL corpus of at least ``target_bytes``: one article of real prose per line."""
    rng, paras = random.Random(seed), paragraphs()
    counts = {"records": 0, "bytes": 0}
    with open(path, "w", encoding="utf-8") as f:
        for title, body in _articles(rng, paras):
            line = json.dumps({"id": f"doc-{counts['records']}", "title": title, "text": "\n\n".join(body)}) + "\n"
            f.write(line)
            counts["records"] += 1
            counts["bytes"] += len(line.encode())
            if counts["bytes"] >= target_bytes:
                break
    return counts
