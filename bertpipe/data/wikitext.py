"""MediaWiki markup → plain prose paragraphs: ``wikitext_to_text``.

A handful of regular expressions and one bracket-matching scan (no full parse: a parse tree
costs ~10x more and gives up on the unbalanced markup real articles are full of).

Trade-offs:

* Templates and parser functions are dropped, never expanded (expansion needs the template
  pages and a Lua runtime). Inline templates that render prose (``{{convert}}``,
  ``{{lang}}``) are lost with them; the leftovers a removal tends to leave, like ``()`` or a
  space before a full stop, are tidied up.
* Tables, galleries, ``<math>``, ``<pre>``, references and file/category/interlanguage
  links (captions included) are dropped whole: they are poor prose for language-model
  pretraining. Headings end a paragraph; their text is dropped.
* Namespaces are English-only prefixes (``File:``, ``Image:``, ``Media:``, ``Category:``);
  interlanguage links are recognised as lowercase language-code prefixes (``[[de:X]]``).
* List items become one paragraph each; paragraphs are separated by a blank line. HTML
  entities are decoded.
* Unbalanced markup is bounded, never allowed to swallow the rest of the article: nothing
  pairs across a heading; an unclosed ``{{`` or ``{|`` takes its own line and the
  template/table lines (starting with ``|``, ``!``, ``{`` or ``}``) right after it; an
  unclosed ``<ref>`` or ``<math>`` (or a ``<ref>`` whose ``</ref>`` lies past a blank line or
  another ``<ref``) is dropped as a bare tag and its text kept, as MediaWiki shows it; an
  unclosed ``<gallery>``, ``<pre>``, ... or ``<!--`` ends at the next blank line or heading;
  stray brackets and lines starting with ``|`` are removed.
"""

from __future__ import annotations

import html
import operator
import re

__all__ = ["wikitext_to_text"]


# --- wikitext -> prose -------------------------------------------------------------------
#
# One pass per construct, in MediaWiki's own order: comments, then extension tags (whose
# content is not wikitext), then per section (headings are hard boundaries) templates and
# tables by bracket matching, then links and external links, HTML tags, quotes, lists and
# entities. Dropped markup leaves a private marker, resolved when paragraphs are cut.

_REMOVED = "\x00"  # dropped markup: a line holding only this is not a blank line
_BREAK = "\x01"  # block markup (heading, table, list item, ...) that ends the current paragraph

_DROPPED_NAMESPACES = frozenset({"file", "image", "media", "category"})
_INTERLANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]+)*|simple")
# Tags whose whole content is dropped: block ones end the paragraph, inline ones do not.
_BLOCK_TAGS = frozenset(
    {"table", "gallery", "references", "pre", "syntaxhighlight", "source", "timeline",
     "imagemap", "graph", "mapframe", "score"}
)
_INLINE_DROPPED_TAGS = frozenset(
    {"ref", "math", "chem", "ce", "hiero", "maplink", "templatestyles", "indicator",
     "categorytree", "style", "script", "noinclude", "includeonly"}
)
_CONTENT_TAGS = _BLOCK_TAGS | _INLINE_DROPPED_TAGS | {"nowiki"}
# HTML tags that are removed but whose content stays; the block ones end the paragraph.
_HTML_BLOCK = frozenset(
    {"p", "div", "center", "blockquote", "li", "ul", "ol", "dl", "dt", "dd", "hr", "tr", "td",
     "th", "caption", "tbody", "thead", "tfoot", "h1", "h2", "h3", "h4", "h5", "h6", "poem"}
)
_HTML_INLINE = frozenset(
    {"b", "i", "u", "s", "big", "small", "sup", "sub", "span", "font", "code", "tt", "kbd",
     "var", "samp", "abbr", "cite", "q", "em", "strong", "strike", "del", "ins", "dfn", "mark",
     "bdi", "bdo", "ruby", "rb", "rp", "rt", "rtc", "time", "data", "wbr", "onlyinclude",
     "section", "br"}
)


def _names(names: frozenset[str]) -> str:
    return "|".join(sorted(names, key=lambda n: (-len(n), n)))  # longest first: "references" before "ref"


# Speed notes. Patterns anchored at a line start begin with "\n" (the text gets one in front):
# a literal first character lets the regex engine skip ahead, where "^" with re.M is tried at
# every position. Case-insensitive parts are scoped, (?i:...), and capturing groups are avoided
# in alternations: either would cost the engine that skip (3x slower).

# A comment ends at the next "-->" (across headings: editors comment out whole sections); one
# that is never closed ends at the next blank line or heading.
_COMMENT = re.compile(r"<!--(?:.*?-->|(?:[^\n]|\n(?![ \t]*\n|=))*)", re.DOTALL)
# The common <ref>s, removed in one pass: self-closing, or one line of content with no tag in it.
_SIMPLE_REF = re.compile(r"<ref(?:\s[^<>]*?)?(?:/>|>[^<\n]*</ref\s*>)")
_CONTENT_OPEN = re.compile(rf"<((?i:{_names(_CONTENT_TAGS)}))(?=[\s/>])[^<>]*?(/?)>")
_CONTENT_CLOSE = {name: re.compile(rf"</(?i:{name})\s*>") for name in _CONTENT_TAGS}
_TABLE_TAG = re.compile(r"<(/?)(?i:table)(?=[\s/>])")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_PARAGRAPH_END = re.compile(r"\n(?:[ \t]*\n|\x00*=)")  # a blank line or a heading
_HEADING_LINE = r"\n\x00*=[^\n]*=[ \t\x00]*(?=\n|$)"
_HEADING = re.compile(_HEADING_LINE)
_ONE_LINE_TEMPLATE = re.compile(r"\{\{\{[^{}\n]*\}\}\}|\{\{[^{}\n]*\}\}")  # {{{parameter}}} or {{template}}
# {{ }} and, at a line start, {| |}: the brackets of templates and tables; and the headings,
# which nothing crosses.
_BRACKETS = re.compile(rf"\{{\{{|\}}\}}|\n[ \t:]*\{{\||\n[ \t]*\|\}}|{_HEADING_LINE}")
_BRACKET_TOKENS = frozenset({"{{", "}}", "{|", "|}"})
# What an unclosed {{ or {| takes after its own line: the lines of template/table syntax.
_NOT_CONTINUED = re.compile(r"\n(?![ \t]*[|!{}\x00])")
_URL = (r"\[(?i:(?:https?|ftps?|irc|ircs|news|gopher|nntp|telnet|sftp|ssh|svn|git|mms|worldwind)://"
        r"|//|mailto:|news:|urn:|tel:)[^\s\[\]<>\"]*[ \t]*")
_BARE_EXTERNAL_LINK = re.compile(_URL + r"\]")  # "[http://x]" shows a footnote number: dropped
_EXTERNAL_LINK = re.compile(_URL + r"([^\]\n]*)\]")  # "[http://x text]" shows "text"
_WIKILINK = re.compile(r"\[\[([^\[\]\n]*)\]\]")
# The common links, [[Target]] and [[Target|text]] with no namespace, rewritten without a Python
# function call per link (the replacement is operator.itemgetter(1), which runs in C): no colon
# in the target, some text after a single pipe.
_PLAIN_LINK = re.compile(r"\[\[([^\[\]|:\n]+)\]\]")
_PIPED_LINK = re.compile(r"\[\[[^\[\]|:\n]*\|([^\[\]|\n]*[^\[\]|\n\s\x00\x01][^\[\]|\n]*)\]\]")
_GROUP_1 = operator.itemgetter(1)
_UNCLOSED_DROPPED_LINK = re.compile(r"\[\[[ \t]*(?i:file|image|media|category)[ \t]*:[^\n\x01]*")
_HTML_TAG = re.compile(rf"</?((?i:{_names(_HTML_BLOCK | _HTML_INLINE | _CONTENT_TAGS)}))(?=[\s/>])[^<>]*>")
_QUOTES = re.compile("'''''|'''|''")  # bold italic, bold, italic (4 quotes: an apostrophe, then bold)
_LIST_ITEM = re.compile(r"\n[*#:;]+[ \t]*([^\n]*)")  # the item's line becomes its own paragraph
_RULE = re.compile(r"\n-{4,}")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_TEMPLATE_LINE = re.compile(r"\n[ \t]*\|[^\n\x01]*")  # template/table syntax left by broken markup
_PARENTHESISED = re.compile(r"\s*\([^)]*\)$")
_BLANK_LINES = re.compile(r"\n\s*\n")

# <nowiki> content is shown as is: its markup characters hide as noncharacters until the end.
_NOWIKI_CHARS = "[]{}|'<>&=*#:;!_-~"
_HIDE = str.maketrans({c: chr(0xFDD0 + i) for i, c in enumerate(_NOWIKI_CHARS)})
_UNHIDE = str.maketrans({chr(0xFDD0 + i): c for i, c in enumerate(_NOWIKI_CHARS)})
_NONCHARACTERS = re.compile("[\ufdd0-\ufdef]")  # never prose

# Tidying the leftovers of removed markup; \s never matches a marker, so no break is crossed.
_EMPTY_PARENS = re.compile(r"\(\s*[,;]?\s*\)")  # "()" left by a removed template
_PAREN_SEPARATOR = re.compile(r"\(\s*[,;]\s*")  # "(, born 1900)"
_SPACE_BEFORE = re.compile(r" (?=[.,;:!?)\]])")  # "word ." left by a removed ref/template


def wikitext_to_text(markup: str) -> str:
    """Return the prose of ``markup``: paragraphs of single-spaced text joined by ``"\\n\\n"``."""
    text = "\n" + markup
    if _REMOVED in text or _BREAK in text:
        text = text.replace(_REMOVED, "").replace(_BREAK, "")
    if "<!--" in text:
        text = _COMMENT.sub(_REMOVED, text)
    nowiki = False
    if "<" in text:
        text, nowiki = _drop_content_tags(text)
    text = _drop_templates_tables_headings(text)
    if "[" in text:
        if "[[" in text:  # first: fewer "[" left makes the external link search cheaper
            text = _PIPED_LINK.sub(_GROUP_1, _PLAIN_LINK.sub(_GROUP_1, text))
        text = _EXTERNAL_LINK.sub(_GROUP_1, _BARE_EXTERNAL_LINK.sub(_REMOVED, text))
        while "[[" in text:
            text, n = _WIKILINK.subn(_wikilink, text)  # innermost first: file captions hold links
            if not n:
                break
        if "[[" in text:  # unclosed
            text = _UNCLOSED_DROPPED_LINK.sub(_REMOVED, text).replace("[[", "")
    if "]]" in text:  # stray
        text = text.replace("]]", "")
    if "<" in text:
        text = _HTML_TAG.sub(_html_tag, text)
    if "''" in text:
        text = _QUOTES.sub("", text)
    if "__" in text:
        text = _MAGIC_WORD.sub("", text)
    text = _LIST_ITEM.sub("\n" + _BREAK + r"\1" + _BREAK, text)
    if "----" in text:
        text = _RULE.sub("\n" + _BREAK, text)
    if "|" in text:  # table brackets and lines of template/table syntax left by broken markup
        text = _TEMPLATE_LINE.sub("\n", text).replace("{|", "").replace("|}", "")
    if "&" in text:
        text = html.unescape(text)
    if nowiki:
        text = text.translate(_UNHIDE)
    return _paragraphs(text)


def _drop_content_tags(text: str) -> tuple[str, bool]:
    """Drop ``<ref>``, ``<math>``, ``<gallery>``, ... with their content (``<nowiki>``: keep it
    verbatim). MediaWiki pairs an opening tag with the next closing one (no nesting, except
    HTML ``<table>``). An inline one without a plausible closing tag is left as a bare tag,
    removed later; a block one ends at the next blank line or heading. Also says whether there
    was a ``<nowiki>``."""
    if "<ref" in text:
        text = _SIMPLE_REF.sub(_REMOVED, text)
    out: list[str] = []
    kept = scan = 0
    nowiki = "nowiki" in text or "NOWIKI" in text or "Nowiki" in text
    if nowiki:
        text = _NONCHARACTERS.sub("", text)  # they are what <nowiki> content hides as
    while m := _CONTENT_OPEN.search(text, scan):
        name = m.group(1).lower()
        scan = m.end()
        if m.group(2):  # self-closing: <ref name="a" />, <references/>
            end = m.end()
        else:
            end = _closing_tag_end(text, name, m.end())
            if end < 0 and name in _BLOCK_TAGS:  # unclosed <gallery>, <pre>, ...: up to a blank line or heading
                stop = _PARAGRAPH_END.search(text, m.end())
                end = stop.start() if stop else len(text)
            elif end < 0:  # unclosed <ref>, <math>, ...: the bare tag goes, its text stays
                continue
        out.append(text[kept : m.start()])
        if name == "nowiki":
            nowiki = True  # whatever its spelling
            content = text[m.end() : end]
            content = content[: content.rfind("<")] if end > m.end() else ""
            out.append(html.unescape(content).translate(_HIDE))
        else:
            out.append(_BREAK if name in _BLOCK_TAGS else _REMOVED)
        kept = scan = end
    out.append(text[kept:])
    return "".join(out), nowiki


def _closing_tag_end(text: str, name: str, start: int) -> int:
    """End of the tag closing ``name`` opened just before ``start``, or -1 if none fits: none
    at all, past a heading, or (``<ref>``) past a blank line or another ``<ref``."""
    if name == "table":  # HTML tables nest
        depth = 1
        for t in _TABLE_TAG.finditer(text, start):
            depth += -1 if t.group(1) else 1
            if depth == 0:
                close = _CONTENT_CLOSE["table"].match(text, t.start())
                if close is None:
                    return -1
                end = close.end()
                break
        else:
            return -1
    else:
        close = _CONTENT_CLOSE[name].search(text, start)
        if close is None:
            return -1
        end = close.end()
    content = text[start:end]
    if "=" in content and _HEADING.search(content):
        return -1
    if name == "ref" and ("<ref" in content.lower() or _BLANK_LINE.search(content)):
        return -1
    return end


def _drop_templates_tables_headings(text: str) -> str:
    """Drop every ``{{...}}`` and ``{|...|}`` (nested ones included) and every heading line.
    Brackets never match across a heading; an unclosed one takes its own line and the
    template/table lines right after it."""
    while "{{" in text:  # first the one-line templates, innermost first: cheaper than the scan
        text, n = _ONE_LINE_TEMPLATE.subn(_REMOVED, text)
        if not n:
            break
    if "{" not in text and "}" not in text:
        return _HEADING.sub("\n" + _BREAK, text) if "=" in text else text
    stack: list[tuple[bool, int]] = []  # (is a table, start) of each open bracket
    spans: list[tuple[int, int, bool]] = []  # (start, end, ends a paragraph) of what goes

    def close_unclosed(limit: int) -> None:
        for table, start in stack:
            end = _NOT_CONTINUED.search(text, start, limit)
            spans.append((start, end.start() if end else limit, table))
        stack.clear()

    scan = 0
    while m := _BRACKETS.search(text, scan):
        token = m.group()[-2:]
        scan = m.end()
        if token not in _BRACKET_TOKENS:  # a heading
            close_unclosed(m.start())
            spans.append((m.start() + 1, scan, True))  # its line, not the newline before it
        elif token == "{{" or token == "{|":
            stack.append((token == "{|", m.start() + (token == "{|")))  # a table starts after its "\n"
        else:
            table = token == "|}"
            if table and stack and not stack[-1][0] and text.startswith("}", scan):
                table, scan = False, scan + 1  # "|}}" closing a template that ends in a "|"
            for i in range(len(stack) - 1, -1, -1):
                if stack[i][0] == table:
                    spans.append((stack[i][1], scan, table))
                    del stack[i:]  # anything opened inside and still open goes with it
                    break
            else:  # a stray closing bracket
                spans.append((scan - 2, scan, False))
    close_unclosed(len(text))
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    kept = 0
    group_start, group_end, group_break = spans[0]
    for start, end, block in spans[1:] + [(len(text) + 1, 0, False)]:
        if start < group_end:  # nested or overlapping
            group_end, group_break = max(group_end, end), group_break or block
            continue
        out.append(text[kept:group_start])
        out.append(_BREAK if group_break else _REMOVED)
        kept = group_end
        group_start, group_end, group_break = start, end, block
    out.append(text[kept:])
    return "".join(out)


def _wikilink(m: re.Match[str]) -> str:
    title, pipe, shown = m.group(1).partition("|")
    title = title.strip()
    target = title.lstrip(":").strip()
    prefix, colon, rest = target.partition(":")
    if colon and not title.startswith(":"):  # a leading colon makes it a visible link
        prefix = prefix.strip()
        if prefix.lower() in _DROPPED_NAMESPACES or _INTERLANGUAGE.fullmatch(prefix):
            return _REMOVED
    if not pipe:
        return target
    if shown.replace(_REMOVED, "").strip():
        return shown
    # Pipe trick: [[Help:Foo (bar)|]] shows "Foo".
    return _PARENTHESISED.sub("", rest if colon else target).strip()


def _html_tag(m: re.Match[str]) -> str:
    name = m.group(1).lower()
    if name == "br" or name in _CONTENT_TAGS:  # a stray <ref>, </ref>: not glued to its neighbours
        return " "
    return _BREAK if name in _HTML_BLOCK else ""


def _paragraphs(rendered: str) -> str:
    """Cut rendered text into tidied, single-spaced paragraphs joined by blank lines: blank
    lines and block markers end a paragraph; a line that held only dropped markup (a
    template, a category) keeps its ``_REMOVED`` marker, so it is not blank and does not split
    the paragraph around it."""
    text = _BLANK_LINES.sub(_BREAK, rendered)
    if _REMOVED in text:
        text = text.replace(_REMOVED, "")
    if "(" in text:
        text = _PAREN_SEPARATOR.sub("(", _EMPTY_PARENS.sub("", text))
    text = "\n\n".join(p for block in text.split(_BREAK) if (p := " ".join(block.split())))
    return _SPACE_BEFORE.sub("", text).replace("( ", "(").replace("[ ", "[")
