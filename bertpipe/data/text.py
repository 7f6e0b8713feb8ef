"""Text cleaning and sentence splitting shared by every input format.

Cleaning is deliberately conservative, because WordPiece and the model see everything we
keep: Unicode NFC, whitespace runs collapsed to one space, and every character BERT's
tokenizer would delete removed — Unicode categories C* (controls, format characters such
as zero-width spaces, private use, unassigned) except tab/newline/CR, and U+FFFD. Text
cleaned here is a fixed point of BERT's ``clean_text`` step, so the shards stage can skip
that step in the tokenizer (15% faster) and still tokenize exactly as BERT. Case and
accents are left alone; the tokenizer decides.

Sentence splitting uses BlingFire's finite-state splitter (C++, ~15 MB/s per core, no model
download). It is rule based, so it occasionally splits after an abbreviation such as
"Mr." before a quote; for NSP that costs little (a sentence boundary inside a chunk is never
visible to the model except through where segment B starts). Pathological "sentences"
(a 50 MB line without punctuation) are cut at whitespace every ``max_sentence_chars``
characters so no single sentence can dominate memory or a training sequence.
"""

from __future__ import annotations

import re
import unicodedata

import blingfire
import regex

# What BERT's clean_text deletes: Unicode "Other" (Cc, Cf, Cs, Co, Cn) except \t \n \r, and
# U+FFFD. The `regex` module has Unicode property classes (and is ~40x faster here than an
# `re` class spelling out the same ranges). Code points assigned in a newer Unicode version
# than one side's tables know may be classified differently; real text has none of them.
_DELETED_BY_BERT = regex.compile(r"[^\P{C}\t\n\r]|\uFFFD")
_WS = r"[ \t\r\f\v\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]"
# Only runs that are not already a single plain space match, so ordinary text is a fast scan.
_SPACES = re.compile(rf"[\t\r\f\v\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]{_WS}*| {_WS}+")
_WORD_END = re.compile(r"\s")


def clean_text(text: str) -> str:
    """NFC, what BERT deletes removed, horizontal whitespace collapsed; newlines are kept."""
    text = unicodedata.normalize("NFC", text)
    text = _DELETED_BY_BERT.sub("", text)
    return _SPACES.sub(" ", text)


def split_sentences(paragraph: str, max_sentence_chars: int = 2000) -> list[str]:
    """Split one paragraph (newlines are treated as spaces) into sentences."""
    paragraph = paragraph.replace("\n", " ").strip()
    if not paragraph:
        return []
    sentences = blingfire.text_to_sentences(paragraph).split("\n")
    out: list[str] = []
    for s in sentences:
        s = s.strip()
        if not s:
            continue
        if len(s) <= max_sentence_chars:
            out.append(s)
        else:
            out.extend(_cut_long(s, max_sentence_chars))
    return out


def _cut_long(s: str, limit: int) -> list[str]:
    """Cut an over-long sentence at the last whitespace before each ``limit`` characters."""
    pieces = []
    start = 0
    n = len(s)
    while n - start > limit:
        window = s[start : start + limit]
        cut = window.rfind(" ")
        end = start + (cut if cut > limit // 2 else limit)
        pieces.append(s[start:end].strip())
        start = end
    tail = s[start:].strip()
    if tail:
        pieces.append(tail)
    return [p for p in pieces if p]


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs are separated by one or more blank lines."""
    return [p.strip() for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
