"""Rule-based quality filters at ingest: Gopher's document rules and C4's line rules.

Purpose
    Web and scraped corpora carry boilerplate, lists, spam and repeated text that cost compute
    and teach little. These are the published heuristics most pipelines apply (HF
    ``datatrove``, NeMo Curator), with the published thresholds, each switched on by name
    (``IngestConfig.filters``) and counted per rule in the manifest (``filtered_<rule>``,
    ``lines_removed_<rule>``) and so in MLflow (``count_filtered_<rule>``).

Rules
    Gopher (Rae et al. 2021, MassiveText, appendix A): ``gopher_words`` 50-100,000 words;
    ``gopher_word_length`` mean word length 3-10 characters; ``gopher_symbols`` at most 0.1
    ``#`` or ellipses per word; ``gopher_bullets`` at most 90% of lines start with a bullet;
    ``gopher_ellipsis_lines`` at most 30% end with an ellipsis; ``gopher_alpha`` at least 80%
    of words contain a letter; ``gopher_stop_words`` at least 2 of "the be to of and that have
    with" (occurrences, as datatrove counts them); ``gopher_repetition``: duplicate lines at most 30% of lines and 20% of characters,
    the most frequent 2/3/4-gram at most 20/18/16% of characters, characters in duplicated
    5..10-grams at most 15..10%.
    C4 (Raffel et al. 2020, section 2.2): ``c4_lines`` drops lines without terminal
    punctuation, with fewer than 3 words or containing "javascript"; ``c4_document`` drops
    documents left with fewer than 5 lines, containing "lorem ipsum" or a curly bracket.
    ``gopher`` and ``c4`` name each family.

Trade-offs
    A "line" is one of the document's sentences as ingest split them (newline-separated lines
    for inputs whose lines are sentences, ``text_format=lines``); Gopher and C4 read raw
    lines of web pages, which for prose are paragraphs. Words are whitespace-separated
    tokens, as in Gopher. Line rules run first (they change the document), then the
    document rules in the order above; a removed document counts under the first rule it fails.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

GOPHER = ("gopher_words", "gopher_word_length", "gopher_symbols", "gopher_bullets", "gopher_ellipsis_lines",
          "gopher_alpha", "gopher_stop_words", "gopher_repetition")
C4 = ("c4_lines", "c4_document")
Rule = Literal["gopher", "c4", "gopher_words", "gopher_word_length", "gopher_symbols", "gopher_bullets",
               "gopher_ellipsis_lines", "gopher_alpha", "gopher_stop_words", "gopher_repetition", "c4_lines", "c4_document"]
LINE_RULES = ("c4_terminal", "c4_short_line", "c4_javascript")  # what c4_lines counts, line by line

_STOP = frozenset("the be to of and that have with".split())
_BULLETS = ("•", "●", "‣", "–", "-", "*", "·", "▪", "◦")
_ELLIPSES = ("...", "…")
_TERMINAL = (".", "!", "?", '"', "”", "’", "'")
_ALPHA = re.compile(r"[^\W\d_]")
_TOP_NGRAM = {2: 0.20, 3: 0.18, 4: 0.16}
_DUP_NGRAM = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


def expand(rules: list[str]) -> tuple[str, ...]:
    """The rules named, families expanded, in the order they apply."""
    named = set(rules) | (set(GOPHER) if "gopher" in rules else set()) | (set(C4) if "c4" in rules else set())
    return tuple(r for r in (*C4[:1], *GOPHER, *C4[1:]) if r in named)


def filter_lines(lines: list[str], counts: Counter) -> list[str]:
    """C4's line rules; each removed line counted under the first rule it fails."""
    kept = []
    for line in lines:
        s = line.strip()
        if not s.endswith(_TERMINAL) or s.endswith(_ELLIPSES):
            counts["c4_terminal"] += 1
        elif len(s.split()) < 3:
            counts["c4_short_line"] += 1
        elif "javascript" in s.lower():
            counts["c4_javascript"] += 1
        else:
            kept.append(line)
    return kept


def _top_ngram_chars(words: list[str], n: int) -> int:
    """Characters in the occurrences of the most frequent n-gram (0 when none repeats)."""
    freq = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    if not freq:
        return 0
    top, c = freq.most_common(1)[0]
    return sum(map(len, top)) * c if c > 1 else 0


def _dup_ngram_chars(words: list[str], n: int) -> int:
    """Characters of the words inside n-grams that occur more than once, each word counted once."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    freq = Counter(grams)
    covered = [False] * len(words)
    for i, g in enumerate(grams):
        if freq[g] > 1:
            covered[i : i + n] = [True] * n
    return sum(len(w) for w, dup in zip(words, covered, strict=True) if dup)


def _repetitive(lines: list[str], words: list[str]) -> bool:
    chars = sum(map(len, lines)) or 1
    seen, dup_lines, dup_chars = set(), 0, 0
    for line in lines:
        if line in seen:
            dup_lines, dup_chars = dup_lines + 1, dup_chars + len(line)
        seen.add(line)
    if dup_lines > 0.30 * len(lines) or dup_chars > 0.20 * chars:
        return True
    word_chars = sum(map(len, words)) or 1
    for n, limit in _TOP_NGRAM.items():
        if _top_ngram_chars(words, n) > limit * word_chars:
            return True
    return any(_dup_ngram_chars(words, n) > limit * word_chars for n, limit in _DUP_NGRAM.items())


def failed_rule(lines: list[str], rules: tuple[str, ...]) -> str | None:
    """The first document rule of ``rules`` that ``lines`` fail, or None (kept)."""
    words = [w for line in lines for w in line.split()]
    n = len(words)
    for rule in rules:
        if rule == "gopher_words" and not 50 <= n <= 100_000:
            return rule
        if rule == "gopher_word_length" and not (n and 3 <= sum(map(len, words)) / n <= 10):
            return rule
        if rule == "gopher_symbols" and sum(line.count("#") + sum(line.count(e) for e in _ELLIPSES) for line in lines) > 0.1 * n:
            return rule
        if rule == "gopher_bullets" and lines and sum(line.lstrip().startswith(_BULLETS) for line in lines) > 0.9 * len(lines):
            return rule
        if rule == "gopher_ellipsis_lines" and lines and sum(line.rstrip().endswith(_ELLIPSES) for line in lines) > 0.3 * len(lines):
            return rule
        if rule == "gopher_alpha" and sum(bool(_ALPHA.search(w)) for w in words) < 0.8 * n:
            return rule
        if rule == "gopher_stop_words" and sum(w.lower() in _STOP for w in words) < 2:  # occurrences, as datatrove
            return rule
        if rule == "gopher_repetition" and _repetitive(lines, words):
            return rule
        if rule == "c4_document":
            text = " ".join(lines).lower()
            if len(lines) < 5 or "lorem ipsum" in text or "{" in text or "}" in text:
                return rule
    return None
