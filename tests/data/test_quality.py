"""Quality filters: each rule on crafted documents just inside and just outside its threshold,
and their counts in the ingest manifest."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bertpipe.data.ingest import IngestConfig, ingest
from bertpipe.data.quality import expand, failed_rule, filter_lines

# Distinct words of 4-6 letters, so word length, repetition and stop words stay neutral.
VOCAB = [f"{a}{b}{c}{d}" for a in "bcdfg" for b in "aeiou" for c in "lmnrst" for d in "aeiou"]


def words(n: int, start: int = 0, stop_words: int = 2) -> list[str]:
    out = VOCAB[start : start + n]
    return ["the", "and"][:stop_words] + out[stop_words:] if stop_words else out


def lines_of(ws: list[str], per: int = 10) -> list[str]:
    return [" ".join(ws[i : i + per]) + "." for i in range(0, len(ws), per)]


def verdict(rule: str, lines: list[str]) -> str | None:
    return failed_rule(lines, (rule,))


CASES = {  # rule: (kept, removed), each a list of lines just inside / outside the threshold
    "gopher_words": (lines_of(words(50)), lines_of(words(49))),
    "gopher_word_length": (lines_of(words(58) + ["ab"] * 2), lines_of(["ab"] * 40 + words(20))),
    "gopher_symbols": (lines_of(words(60)) + ["# " * 6 + "end."], lines_of(words(60)) + ["# " * 7 + "end."]),
    "gopher_bullets": (["• " + ln for ln in lines_of(words(100))[:9]] + lines_of(words(10, 200)),
                       ["• " + ln for ln in lines_of(words(100))] + lines_of(words(10, 200))[:1]),
    "gopher_ellipsis_lines": ([ln[:-1] + "..." for ln in lines_of(words(100))[:3]] + lines_of(words(70, 200)),
                              [ln[:-1] + "..." for ln in lines_of(words(100))[:4]] + lines_of(words(60, 200))),
    "gopher_alpha": (lines_of(words(80) + ["123"] * 20), lines_of(words(79) + ["123"] * 21)),
    "gopher_stop_words": (lines_of(words(60)), lines_of(["the"] + words(59, stop_words=0))),
    "gopher_repetition": (lines_of(words(100)), lines_of(words(50)) * 2),
    "c4_document": (lines_of(words(50)), lines_of(words(40))),  # 5 lines kept, 4 removed
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_rule_at_both_sides_of_its_threshold(rule):
    kept, removed = CASES[rule]
    assert verdict(rule, kept) is None
    assert verdict(rule, removed) == rule


def spread(unique: list[str], piece: list[str], k: int, every: int = 7) -> list[str]:
    """``unique`` words with ``piece`` inserted after every ``every`` of them, ``k`` times."""
    out = []
    for i in range(0, len(unique), every):
        out += unique[i : i + every] + (piece if k > 0 else [])
        k -= 1
    assert k <= 0, "not enough room"
    return out


def test_repetition_top_2gram_and_duplicated_5grams():
    base, two, five = words(300), ["abcdefgh", "ijklmnop"], VOCAB[710:715]

    def doc(piece: list[str], k: int) -> list[str]:
        return [" ".join(spread(base, piece, k))]  # one line: no line-end punctuation inside the n-grams

    # most frequent 2-gram: 16 of (4 x 300 + 16k) characters, limit 20%
    assert verdict("gopher_repetition", doc(two, 15)) is None  # 16.7%
    assert verdict("gopher_repetition", doc(two, 25)) == "gopher_repetition"  # 25%
    # characters in duplicated 5-grams: 20 per copy, limit 15%
    assert verdict("gopher_repetition", doc(five, 10)) is None  # 14.3%
    assert verdict("gopher_repetition", doc(five, 14)) == "gopher_repetition"  # 18.9%


def test_c4_lines_drop_lines_and_count_them():
    counts = Counter()
    kept = filter_lines(["A fine line here.", "no terminal punctuation", "Too short.", "Enable javascript to see this.",
                         "Trailing dots here..."], counts)
    assert kept == ["A fine line here."]
    assert counts == {"c4_terminal": 2, "c4_short_line": 1, "c4_javascript": 1}
    assert verdict("c4_document", lines_of(words(50)) + ["lorem ipsum dolor sit amet."]) == "c4_document"
    assert verdict("c4_document", lines_of(words(50)) + ["a {b} c d."]) == "c4_document"


def test_families_expand_in_order():
    assert expand(["gopher"])[0] == "gopher_words" and len(expand(["gopher"])) == 8
    assert expand(["c4", "gopher_alpha"]) == ("c4_lines", "gopher_alpha", "c4_document")


def test_ingest_counts_per_rule_and_keeps_names_when_off(tmp_path):
    docs = [" ".join(lines_of(words(60))), " ".join(lines_of(words(30))), " ".join(lines_of(["ab"] * 60)),
            " ".join(lines_of(words(50)) * 3)]
    (src := tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    cfg = IngestConfig(workers=1, min_doc_chars=1)
    off = ingest([src], cfg, tmp_path / "o")
    on = ingest([src], cfg.model_copy(update={"filters": ["gopher"]}), tmp_path / "o")
    assert "filters" not in off.manifest["config"] and off.fingerprint != on.fingerprint
    c = on.manifest["counts"]
    assert c["documents"] == 1 and off.manifest["counts"]["documents"] == 4
    assert c["filtered_gopher_words"] == 1 and c["filtered_gopher_word_length"] == 1 and c["filtered_gopher_repetition"] == 1
    assert c["filtered_gopher_alpha"] == 0  # every rule on is listed, zeros included
    with pytest.raises(ValueError, match="filters"):
        IngestConfig(filters=["gopher_wrods"])
