"""The plain-text format rule of bertpipe.data.formats: decided in the run's encoding, the same
for the span planner and the reader, on whole lines read in bounded pieces."""

from __future__ import annotations

import codecs

import pytest

from bertpipe.data.formats import HEAD_LINES, decide_text_format, looks_like_lines
from bertpipe.data.ingest import TEXT_FORMAT_IN_RUN_ENCODING, IngestConfig, IngestStage
from bertpipe.data.spans import plan_spans

QUOTED = "".join(f"Speaker {d} rose and said: \u201cWe stay.\u201d\nThe hall was quiet after speech {d}.\n\n" for d in range(300))


def test_the_format_is_judged_in_the_runs_encoding(tmp_path):
    path = tmp_path / "quotes.txt"
    path.write_bytes(QUOTED.encode("cp1252"))  # the curly quotes are single bytes, invalid as UTF-8
    assert decide_text_format(path, "cp1252") == "lines"
    assert decide_text_format(path, "utf-8") == "prose"  # what the span planner judged before
    cut = plan_spans(path, "text", "auto", 3, unit_bytes=4000, encoding="cp1252")
    assert len(cut) >= 4 and {s.text_format for s in cut} == {"lines"}


@pytest.mark.parametrize("codec", ["utf-16", "utf-32", "utf-8-sig"])
def test_a_marked_file_is_judged_as_its_text(tmp_path, codec):
    path = tmp_path / "marked.txt"
    path.write_bytes(QUOTED.encode(codec))
    assert decide_text_format(path) == "lines"
    (tmp_path / "plain.txt").write_bytes(QUOTED.replace("\n\n", " ").encode(codec))  # the sentences wrapped as prose
    assert decide_text_format(tmp_path / "plain.txt") == "lines"  # one long line that ends like a sentence
    (tmp_path / "wrapped.txt").write_bytes("".join(f"word {i} of a paragraph wrapped\n" for i in range(50)).encode(codec))
    assert decide_text_format(tmp_path / "wrapped.txt") == "prose"


def test_lines_longer_than_a_read_are_judged_whole(tmp_path):
    """Lines of megabytes, read in 1 MiB pieces (one cut inside a two-byte character): the
    judgement on their last non-blank characters is the one on the whole decoded lines."""
    lines = ["a" * ((1 << 20) - 1) + "\u00e9 ending.\n",  # é straddles the first piece's end
             "x " * (1 << 20) + "\n",  # wrapped prose: no sentence end
             "Closing words.\t" + " " * (3 << 20) + "\n",  # the terminal character, megabytes before the newline
             "\n", "   \n", "no end here\n"] + ["short one.\n"] * (HEAD_LINES + 5)
    for head in (lines[:3], lines[:6], lines[1:2] + lines[5:6] * 3 + lines[:1], lines):
        path = tmp_path / "long.txt"
        data = "".join(head).encode()
        path.write_bytes(data)
        expected = looks_like_lines(data.decode().splitlines(keepends=True)[:HEAD_LINES])
        assert decide_text_format(path) == ("lines" if expected else "prose")


def test_only_a_corpus_whose_judgement_changed_gets_a_new_name(tmp_path):
    (tmp_path / "changed").mkdir()
    (tmp_path / "changed" / "quotes.txt").write_bytes(QUOTED.encode("cp1252"))
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "latin.txt").write_bytes("Un caf\u00e9 tr\u00e8s fran\u00e7ais. Voil\u00e0 tout.\n".encode("latin-1"))
    cp1252 = IngestConfig(encoding="cp1252", workers=1)
    assert IngestStage(cp1252, [tmp_path / "changed"]).upstream()[-1] == TEXT_FORMAT_IN_RUN_ENCODING
    assert TEXT_FORMAT_IN_RUN_ENCODING not in IngestStage(cp1252, [tmp_path / "same"]).upstream()
    lines = cp1252.model_copy(update={"text_format": "lines"})  # not judged at all
    assert TEXT_FORMAT_IN_RUN_ENCODING not in IngestStage(lines, [tmp_path / "changed"]).upstream()
    (tmp_path / "utf8").mkdir()
    (tmp_path / "utf8" / "quotes.txt").write_bytes(codecs.BOM_UTF8 + QUOTED.encode())
    assert TEXT_FORMAT_IN_RUN_ENCODING not in IngestStage(IngestConfig(workers=1), [tmp_path / "utf8"]).upstream()
