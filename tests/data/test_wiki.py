"""Tests for bertpipe.data.wiki: MediaWiki dump streaming and wikitext -> prose cleaning."""

from __future__ import annotations

import bz2
import re
import tracemalloc
from pathlib import Path

import pytest

from bertpipe.data.wiki import WikiPage, WikiStats, iter_wiki_pages, wikitext_to_text
from tests.conftest import FIXTURES

FIXTURE = FIXTURES / "wiki_fragment.xml"

AARDVARK = (
    "The aardvark (Orycteropus afer) is a medium-sized, burrowing, nocturnal mammal native to "
    "Africa. It is the only living species of the order Tubulidentata."
    "\n\n"
    "Unlike most insectivores, it has a long pig-like snout. Its diet is mainly ants & termites."
    "\n\n"
    "The aardvark is vaguely pig-like in appearance. Its body is stout."
    "\n\n"
    "It feeds on:\n\nants\n\ntermites\n\nthe aardvark cucumber"
    "\n\n"
    "See the IUCN Red List entry for details."
)
ORYCTEROPODIDAE = (
    "Orycteropodidae is a family of afrotherian mammals.\n\nIts only living member is the aardvark."
)
EXPECTED_PAGES = [
    WikiPage(id="680", title="Aardvark", text=AARDVARK),
    WikiPage(id="684", title="Orycteropodidae", text=ORYCTEROPODIDAE),
]
LEFTOVER_MARKUP = ["{{", "}}", "[[", "]]", "|", "<ref", "<", "'''", "''", "==", "Category", "thumb",
                   "&amp;", "&nbsp;", "{|", "Infobox", "Erdferkel", "hidden editor note"]


def _pages(path: Path, stats: WikiStats | None = None) -> list[WikiPage]:
    return list(iter_wiki_pages(path, stats))


# --- streaming the dump ------------------------------------------------------------------


def test_fixture_articles_have_exact_clean_prose() -> None:
    assert _pages(FIXTURE) == EXPECTED_PAGES


@pytest.mark.parametrize("page", EXPECTED_PAGES, ids=lambda p: p.title)
def test_no_markup_left_and_link_text_kept(page: WikiPage) -> None:
    (actual,) = [p for p in _pages(FIXTURE) if p.title == page.title]
    for fragment in LEFTOVER_MARKUP:
        assert fragment not in actual.text
    assert "\n\n\n" not in actual.text and actual.text == actual.text.strip()


def test_link_text_is_kept() -> None:
    text = _pages(FIXTURE)[0].text
    for shown in ["mammal", "Africa", "Tubulidentata", "ants", "termites", "aardvark cucumber",
                  "IUCN Red List entry"]:
        assert shown in text
    assert "Detroit Zoo" not in text  # inside a File caption, which is dropped whole


def test_skipped_pages_are_counted() -> None:
    stats = WikiStats()
    pages = _pages(FIXTURE, stats)
    assert stats == WikiStats(pages=6, articles=2, redirects=2, non_article=1, empty=1)
    assert stats.articles == len(pages)
    titles = {p.title for p in pages}
    assert not titles & {"Antbear", "Earth pig", "Talk:Aardvark", "Tubulidentata stub"}


def test_latest_revision_is_used() -> None:
    text = {p.title: p.text for p in _pages(FIXTURE)}["Orycteropodidae"]
    assert "Stale first draft" not in text
    assert text.startswith("Orycteropodidae is a family")


def test_stats_are_optional() -> None:
    assert [p.title for p in iter_wiki_pages(FIXTURE)] == ["Aardvark", "Orycteropodidae"]


@pytest.mark.parametrize(
    "xmlns",
    ['xmlns="http://www.mediawiki.org/xml/export-0.11/"', 'xmlns="http://example.org/other/"', ""],
    ids=["export-0.11", "other-namespace", "no-namespace"],
)
def test_any_export_namespace_is_handled(tmp_path: Path, xmlns: str) -> None:
    xml = FIXTURE.read_text(encoding="utf-8")
    original = 'xmlns="http://www.mediawiki.org/xml/export-0.10/"'
    assert original in xml
    dump = tmp_path / "dump.xml"
    dump.write_text(xml.replace(original, xmlns, 1), encoding="utf-8")
    stats = WikiStats()
    assert _pages(dump, stats) == EXPECTED_PAGES
    assert stats.redirects == 2 and stats.non_article == 1


def test_bz2_dump_gives_the_same_pages(tmp_path: Path) -> None:
    dump = tmp_path / "enwiki-pages-articles.xml.bz2"
    dump.write_bytes(bz2.compress(FIXTURE.read_bytes()))
    stats = WikiStats()
    assert _pages(dump, stats) == EXPECTED_PAGES
    assert stats == WikiStats(pages=6, articles=2, redirects=2, non_article=1, empty=1)


def test_truncated_bz2_raises_value_error_naming_the_file(tmp_path: Path) -> None:
    data = bz2.compress(FIXTURE.read_bytes())
    dump = tmp_path / "truncated.xml.bz2"
    dump.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(str(dump))) as info:
        _pages(dump)
    assert "truncated" in str(info.value)
    assert isinstance(info.value.__cause__, EOFError)


def test_non_bz2_data_in_bz2_file_raises_value_error(tmp_path: Path) -> None:
    dump = tmp_path / "not-really.xml.bz2"
    dump.write_bytes(FIXTURE.read_bytes())
    with pytest.raises(ValueError, match=re.escape(str(dump)) + ".*bzip2"):
        _pages(dump)


def test_malformed_xml_raises_value_error_with_position(tmp_path: Path) -> None:
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    bad_line = next(i for i, line in enumerate(lines) if "<title>Orycteropodidae</title>" in line)
    lines[bad_line] = lines[bad_line].replace("</title>", "</titel>")
    dump = tmp_path / "malformed.xml"
    dump.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(dump))) as info:
        _pages(dump)
    assert f"line {bad_line + 1}, column" in str(info.value)
    assert "mismatched tag" in str(info.value)


def test_truncated_plain_xml_raises_value_error(tmp_path: Path) -> None:
    xml = FIXTURE.read_text(encoding="utf-8")
    dump = tmp_path / "cut.xml"
    dump.write_text(xml[: xml.index("<title>Talk:Aardvark")], encoding="utf-8")
    stream = iter_wiki_pages(dump)
    assert next(stream).title == "Aardvark"  # pages before the damage still come through
    with pytest.raises(ValueError, match=re.escape(str(dump))):
        list(stream)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _pages(tmp_path / "absent.xml")


# --- wikitext_to_text --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        ("{{Infobox|a={{nowrap|b}}}}A {{lang|fr|{{x|y}}}}cat.", "A cat."),
        ("Before.\n{| class=\"wikitable\"\n|-\n| a || b\n|}\nAfter.", "Before.\n\nAfter."),
        ('Fact.<ref name="a">Source {{cite web|url=x}}</ref> More.<ref name="a" />', "Fact. More."),
        ("A [[File:X.jpg|thumb|left|Caption [[with link]]]] b [[Image:Y.png]] c [[Media:Z.ogg]].",
         "A b c."),
        ("Text.\n[[Category:Things]]\n[[Category:Other|sort key]]\n[[de:Ding]]\n[[zh-min-nan:Mih]]",
         "Text."),
        ("See [[Target|shown]], [[Target]]s and [[:Category:Things]].",
         "See shown, Targets and Category:Things."),
        ("A [[Paris (disambiguation)|]] b [[Help:Foo bar (x)|]].", "A Paris b Foo bar."),
        ("Intro.\n== Heading ==\nBody.\n=== Sub ===\nMore.", "Intro.\n\nBody.\n\nMore."),
        ("'''Bold''' and ''italic'' and '''''both'''''.", "Bold and italic and both."),
        ("Visit [http://example.org the site] or [http://example.org/2].", "Visit the site or."),
        ("Tom &amp; Jerry&nbsp;run &lt;fast&gt;.", "Tom & Jerry run <fast>."),
        ("List:\n* one\n** two [[x|deux]]\n# three\n: four\nAfter.",
         "List:\n\none\n\ntwo deux\n\nthree\n\nfour\n\nAfter."),
        ("one\n  line\n\n\n\nnext   para", "one line\n\nnext para"),
        ("{{stub}}\n\n\n[[Category:X]]\n", ""),
        ("Keep<!-- a comment --> this.<gallery>\nA.jpg|cap\n</gallery>", "Keep this."),
        ("x<br />y <span style=\"c\">z</span> <math>e=mc^2</math>w __NOTOC__", "x y z w"),
        ("Born (born {{birth date|1900|1|1}}) here {{cn}}.", "Born (born) here."),
        ("A ({{lang|de|Erdferkel}}) b.", "A b."),
    ],
    ids=["nested-templates", "table", "refs", "file-links", "category-interlanguage", "links",
         "pipe-trick", "headings", "bold-italic", "external-links", "entities", "lists",
         "whitespace", "only-markup", "comment-gallery", "inline-tags", "removed-template-gap",
         "empty-parens"],
)
def test_wikitext_to_text(markup: str, expected: str) -> None:
    assert wikitext_to_text(markup) == expected


def test_template_only_line_does_not_split_a_paragraph() -> None:
    assert wikitext_to_text("First half\n{{Clear}}\nsecond half.") == "First half second half."


def test_memory_stays_bounded_while_streaming(tmp_path: Path) -> None:
    """Finished pages must be cleared from the tree: kept, 3000 pages cost ~2 MB of
    elements; cleared, the peak stays around a few hundred kB whatever the dump size."""
    pages = "".join(
        f"<page><title>P{i}</title><ns>0</ns><id>{i}</id><revision><id>{i}</id>"
        f'<text xml:space="preserve">Prose of page {i} with a [[link]].</text></revision></page>'
        for i in range(3000)
    )
    dump = tmp_path / "many.xml"
    dump.write_text(f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">{pages}</mediawiki>')

    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_wiki_pages(dump))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 3000
    assert peak < 1_000_000
