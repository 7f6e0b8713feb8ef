"""bertpipe.data.wikitext.wikitext_to_text on each MediaWiki construct, on unbalanced markup and on a
whole article: exact prose, no markup residue, no section lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertpipe.data.wiki import WikiStats, iter_wiki_pages, wikitext_to_text

# the residue the MediaWiki benchmark counts (bertpipe.bench.wiki.RESIDUE), and more
RESIDUE = ["{{", "}}", "[[", "]]", "'''", "''", "<ref", "</ref", "{|", "|}", "|-", "bgcolor", "colspan",
           "rowspan", "&lt;", "&amp;", "&nbsp;", "&ndash;", "[http", "==", "<", ">", "|", "__", "thumb",
           "Category", "Infobox", "cite", "\x00", "\x01"]


def _no_residue(text: str) -> None:
    for fragment in RESIDUE:
        assert fragment not in text, f"{fragment!r} left in {text!r}"


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        # templates and parser functions, nested, one line or many; template parameters
        ("A{{#if: x | {{b|c}} | d}} b.", "A b."),
        ("A {{#expr: 1 + {{x|2}} }} b {{{1|default}}} c {{x|{{y|{{z}}}}}}.", "A b c."),
        (("Before.\n{{Infobox person\n| name = {{nowrap|X {{small|Y}}}}\n| born = {{birth date|1900|1|1}}\n"
          "| list = {{plainlist|\n* [[a]]\n* [[b]]\n}}\n}}\nAfter."), "Before. After."),
        ("Start {{navbox\n| list = x\n|}} end.", "Start end."),  # "|}}" ends the template
        # tables: attributes, caption, header cells, nested tables, templates in cells, tables in templates
        (('Before.\n{| class="wikitable" style="x"\n|+ Caption\n|-\n! scope=col | H !! colspan="2" | I\n|-\n'
          '| bgcolor="#fff" rowspan=2 | a || {{sort|1|b}}\n|-\n| {|\n| inner\n|}\n|}\nAfter.'), "Before.\n\nAfter."),
        ("Before.\n{{Infobox\n| a = {|\n| x\n|}\n| b = c\n}}\nAfter.", "Before. After."),
        ("Before.\n:{| class=x\n| indented table\n|}\nAfter.", "Before.\n\nAfter."),
        ('Before.\n<table class="x"><tr><td>a<table><tr><td>b</td></tr></table></td></tr></table>\nAfter.',
         "Before.\n\nAfter."),
        # references
        ('A.<ref name=x/> B.<ref name="y" group="n">{{cite|a}} [[x|y]]</ref> C.<ref>\nmulti\nline {{cite\n|t=1}}\n</ref> D.',
         "A. B. C. D."),
        ("Text.\n== Notes ==\n<references/>\n<references>\n<ref name=a>x</ref>\n</references>\nEnd.", "Text.\n\nEnd."),
        ("Fact<REF>shouted</REF>.", "Fact."),
        # comments: inline, and a closed one spanning paragraphs and a heading (a commented-out section)
        ("Keep <!-- one --> this <!-- two\n\npara\n== H ==\n--> too.", "Keep this too."),
        # tags whose content is dropped; tags whose content is kept
        (("E <math>\\frac{1}{2}</math> F <chem>H2O</chem>.\n<gallery>\nFile:A.jpg|[[a]]\n</gallery>\n"
          "<pre>\ncode {{x}}\n</pre>\n<syntaxhighlight lang=python>\nx = {1: 2}\n</syntaxhighlight>\nG."), "E F.\n\nG."),
        ("A <includeonly>hidden</includeonly>B <timeline>\nx\n</timeline> C.", "A B\n\nC."),
        ("<div class=x>Div text.</div><span>sp</span> <small>sm</small><sup>2</sup> <blockquote>Quote.</blockquote> after",
         "Div text.\n\nsp sm2\n\nQuote.\n\nafter"),
        ("a<br>b<br/>c<BR />d", "a b c d"),
        ("<nowiki>[[not a link]] {{x}} &amp;</nowiki> and <nowiki/>s", "[[not a link]] {{x}} & and s"),
        # wikilinks: plain, piped, link trail, pipe trick, visible namespace, interwiki, section,
        # template as the text
        (("[[a]] [[B|b]] [[c]]s [[Paris (disambiguation)|]] [[:Category:X]] [[wikt:word|word]] [[Foo#Bar|baz]] "
          "[[Foo|{{lang|fr|x}}]] [[Help:Foo bar (x)|]]."), "a b cs Paris Category:X word baz Foo Foo bar."),
        # file, image, media and category links (captions with links, templates, external links,
        # quotes), interlanguage links: dropped whole
        (("A [[File:X.jpg|thumb|Cap [[a]] {{b}} [http://x y] ''z'' [[c|d]]]] B [[image:y.png|left]] C "
          "[[ Category : Z | k]] D [[Media:Z.ogg]] [[de:X]] [[simple:Y]] [[zh-min-nan:Z]]."), "A B C D."),
        # external links
        (("[http://a.org text] [http://b.org] [//c.org proto] [mailto:x@y.org mail] [HTTPS://D.ORG caps] "
          "http://bare.org/x ok."), "text proto mail caps http://bare.org/x ok."),
        # bold and italic
        ("'''''x''''' ''y'' '''z''' Hello ''''world''' end.", "x y z Hello 'world end."),
        # headings end a paragraph; their text goes
        ("Intro.\n== Head ==\nBody.\n=== Sub === <!-- c -->\nMore.\n==== Deep ====\nLast.",
         "Intro.\n\nBody.\n\nMore.\n\nLast."),
        ("== Lead heading ==\nText.", "Text."),
        # lists: one paragraph per item, kept
        ("Items:\n* one\n# two\n: three\n;term : definition\n**nested [[x|deux]]\nAfter.",
         "Items:\n\none\n\ntwo\n\nthree\n\nterm: definition\n\nnested deux\n\nAfter."),
        # entities
        ("&amp; &nbsp;x &ndash; &#91;1&#93; &#x2014; &eacute; &lt;b&gt; AT&amp;T", "& x – [1] — é <b> AT&T"),
        # magic words, horizontal rules, our own marker characters in the input
        ("A __TOC__ B __NOTOC__ C __NOEDITSECTION__.", "A B C."),
        ("Para.\n----\nNext.", "Para.\n\nNext."),
        ("x\x00y\x01z", "xyz"),
        # leftovers of broken markup
        ("Stray }} and |} and ]] and {| here.", "Stray and and and here."),
        ("Line\n| stray template line\nafter", "Line\n\nafter"),
    ],
    ids=["parser-function", "nested-templates-params", "infobox", "template-closing-pipe", "tables",
         "table-in-template", "indented-table", "html-tables", "refs", "references", "ref-uppercase",
         "comments", "dropped-tags", "includeonly-timeline", "html-kept", "br", "nowiki", "wikilinks",
         "file-category-interlanguage", "external-links", "quotes", "headings", "heading-first",
         "lists", "entities", "magic-words", "rule", "marker-characters", "stray-brackets",
         "stray-template-line"],
)
def test_each_construct(markup: str, expected: str) -> None:
    assert wikitext_to_text(markup) == expected


ECONOMY = "The economy grew by three percent a year."
CULTURE = "Culture is rich and varied."
REST = f"\n== Economy ==\n{ECONOMY}\n\n== Culture ==\n{CULTURE}\n"


@pytest.mark.parametrize(
    "broken",
    [
        "Intro {{cite web |url=http://x |title=never closed",
        "Intro {{cite web |url=http://x\n| title = never closed",
        "Intro.<ref>never closed",
        "Intro.<ref name=a>never closed",
        "Intro.\n{| class=wikitable\n|-\n| bgcolor=red | never closed",
        "Intro <!-- never closed",
        "Intro [[File:X.jpg|thumb|never closed [[a]]",
        "Intro <math>x^2",
        "Intro.\n<gallery>\nFile:A.jpg|a",
        "Intro }} |} ]] stray closers",
        "Intro {{{param",
    ],
    ids=["template", "multiline-template", "ref", "named-ref", "table", "comment", "file-link", "math",
         "gallery", "stray-closers", "parameter"],
)
def test_unbalanced_markup_loses_no_section(broken: str) -> None:
    text = wikitext_to_text("Lead paragraph.\n\n" + broken + REST)
    assert text.startswith("Lead paragraph.\n\n")
    assert text.endswith(f"{ECONOMY}\n\n{CULTURE}")
    _no_residue(text)


@pytest.mark.parametrize(
    "markup",
    [
        # an unclosed opening paired by a naive parser with a closing one sections later
        "Intro {{cite web|x=y" + REST + "{{a|b}} }}\n",
        "Intro <math>x" + REST + "<math>y</math>\n",
        "Intro.<ref>abc" + REST + "<ref>x</ref>\n",
        "Intro.\n{| class=x\n|-\n| a" + REST + "{|\n| b\n|}\n",
        "Intro <!-- unclosed" + REST,
    ],
    ids=["template", "math", "ref", "table", "comment"],
)
def test_nothing_pairs_across_a_heading(markup: str) -> None:
    """The old full parse (mwparserfromhell) dropped everything from "Intro" to the later
    closing bracket in the first two cases."""
    text = wikitext_to_text(markup)
    assert text.startswith("Intro") and text.endswith(f"{ECONOMY}\n\n{CULTURE}")
    _no_residue(text)


ARTICLE = """{{Short description|Town in England}}
{{Use dmy dates|date=March 2024}}
{{Infobox settlement
| name = Exampleton
| image = Exampleton.jpg
| caption = The market in {{circa|1900}}<br />from the [[hill]]
| population = {{#expr: 12 * 1000 round 0}}<ref name="census">{{cite web |url=https://example.org |title=Census}}</ref>
| leader = {{plainlist|
* [[Jane Doe]]
* [[John Roe]]
}}
| coordinates = {{coord|51|30|N|0|7|W|display=inline,title}}
}}
[[File:Exampleton market.jpg|thumb|upright=1.2|The market, from the ''[[Illustrated News]]'' ({{circa|1890}})]]
'''Exampleton''' ({{lang-fr|Exempleville}}; {{IPA|/ɪɡˈzɑːmpəltən/}}) is a [[market town]] in [[Kent|the county of Kent]], [[England]].<ref name="census" /> It had 12,000&nbsp;inhabitants in 2021.{{citation needed|date=May 2020}}
__TOC__
== History ==
{{Main|History of Exampleton}}
The town grew around a [[Norman conquest of England|Norman]] castle.<ref>{{cite book |last=Smith |title=''Towns'' |year=1999 |pages=1&ndash;2}}</ref> Its charter dates from 1201&nbsp;AD.<!-- check the year -->
<ref group=note>Some say 1202.</ref>

{| class="wikitable sortable" style="text-align:center"
|+ Population by year
|-
! Year !! colspan="2" | Figures
|-
| bgcolor="#ddffdd" | 1801 || 3,000 || rowspan="2" | [[Census]]<ref>x</ref>
|-
| bgcolor="#ffdddd" | 1901 || 7,000
|}

== Economy ==
The economy rests on '''farming''', ''brewing'' &amp; tourism.<ref name="econ">{{cite news|title=Hops}}</ref> Formula <math>x_1 = \\frac{1}{2}</math> applies.
* Brewing, since 1700
* [[Tourism]] &ndash; mostly in summer
# Farming {{convert|200|ha|acre}}

=== Trade ===
Trade goes through the [https://example.org/port port] and [http://example.org/rail].

<gallery>
File:A.jpg|Caption [[a]]
</gallery>
== References ==
{{Reflist}}
<references />

== External links ==
* [https://example.org Official website]
{{Authority control}}
{{DEFAULTSORT:Exampleton}}
[[Category:Towns in Kent]]
[[Category:Market towns|Exampleton]]
[[de:Exampleton]]
[[fr:Exampleton]]
"""

ARTICLE_TEXT = "\n\n".join((  # noqa: FLY002
    "Exampleton is a market town in the county of Kent, England. It had 12,000 inhabitants in 2021.",
    "The town grew around a Norman castle. Its charter dates from 1201 AD.",
    "The economy rests on farming, brewing & tourism. Formula applies.",
    "Brewing, since 1700",
    "Tourism – mostly in summer",
    "Farming",
    "Trade goes through the port and.",
    "Official website",
))


def test_a_whole_article() -> None:
    text = wikitext_to_text(ARTICLE)
    assert text == ARTICLE_TEXT
    _no_residue(text)


def test_the_output_is_deterministic_and_stable() -> None:
    once = wikitext_to_text(ARTICLE)
    assert wikitext_to_text(ARTICLE) == once
    assert wikitext_to_text(once) == once  # cleaned prose is a fixed point


def test_a_broken_article_in_a_dump_keeps_its_sections(tmp_path: Path) -> None:
    body = ARTICLE.replace("{{Main|History of Exampleton}}", "{{Main|History of Exampleton").replace(
        "<ref>x</ref>", "<ref>x")
    dump = tmp_path / "dump.xml"
    from xml.sax.saxutils import escape

    dump.write_text(
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">\n<page><title>Exampleton</title><ns>0</ns>'
        f'<id>7</id><revision><id>70</id><text xml:space="preserve">{escape(body)}</text></revision></page>\n</mediawiki>\n',
        encoding="utf-8",
    )
    stats = WikiStats()
    (page,) = iter_wiki_pages(dump, stats)
    assert stats.articles == 1
    for paragraph in ARTICLE_TEXT.split("\n\n")[2:]:  # from the Economy section on
        assert paragraph in page.text
    _no_residue(page.text)
