"""Ingest: every input format, directories and globs, dedupe, skips and clear errors."""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertpipe.data.ingest import IngestConfig, IngestStage, ingest
from bertpipe.data.readers import InputError
from tests.conftest import FIXTURES, SAMPLE

WIKI = FIXTURES / "wiki_fragment.xml"
CFG = IngestConfig(workers=1, min_doc_chars=1)


def docs_of(result) -> list[dict]:
    rows = []
    for part in sorted(result.path.glob("part-*.parquet")):
        rows.extend(pq.read_table(part).to_pylist())
    return rows


def test_bert_lines_format(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("First sentence here.\nSecond one here.\n\nOther doc, one sentence.\n\n\nThird doc.\nLast line!\n")
    docs = docs_of(ingest([f], CFG, tmp_path / "out"))
    assert [d["sentences"] for d in docs] == [
        ["First sentence here.", "Second one here."],
        ["Other doc, one sentence."],
        ["Third doc.", "Last line!"],
    ]
    assert [d["source"] for d in docs] == ["c.txt"] * 3
    assert [d["n_chars"] for d in docs] == [sum(map(len, d["sentences"])) for d in docs]


def test_prose_format_joins_wrapped_lines_and_breaks_documents(tmp_path):
    f = tmp_path / "novel.txt"
    f.write_text("The Martians came\nat night. They were\nlarge\n\nNext paragraph here. Yes\n\n\n\nCHAPTER II\n\nA new chapter\nbegins.\n")
    docs = docs_of(ingest([f], CFG, tmp_path / "out"))
    assert [d["sentences"] for d in docs] == [
        ["The Martians came at night.", "They were large", "Next paragraph here.", "Yes"],
        ["CHAPTER II", "A new chapter begins."],
    ]


def test_jsonl_gz_parquet_dirs_and_globs(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    with gzip.open(src / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps({"id": "x1", "title": "T1", "body": "One. Two!\n\nThree?"}) + "\n")
        f.write(json.dumps({"body": "No id here. Fine."}) + "\n")
    pq.write_table(pa.table({"body": ["Parquet text. Second."], "id": [7]}), src / "sub" / "b.parquet")
    (src / "sub" / "notes.csv").write_text("ignored")
    res = ingest([str(src / "**" / "*.parquet"), src / "a.jsonl.gz"], CFG.model_copy(update={"text_field": "body"}), tmp_path / "o1")
    docs = docs_of(res)
    assert [(d["id"], d["title"], d["sentences"]) for d in docs] == [
        ("7", None, ["Parquet text.", "Second."]),
        ("x1", "T1", ["One.", "Two!", "Three?"]),
        ("a.jsonl.gz:2", None, ["No id here.", "Fine."]),
    ]
    with pytest.raises(InputError, match=r"notes.csv \(unsupported extension\); pass --on-bad-file skip"):
        ingest([src], CFG.model_copy(update={"text_field": "body"}), tmp_path / "o2")
    whole = ingest([src], CFG.model_copy(update={"text_field": "body", "on_bad_file": "skip"}), tmp_path / "o2")
    assert whole.manifest["unsupported"] == [{"path": str(src / "sub" / "notes.csv"), "reason": "unsupported extension"}]
    assert whole.manifest["counts"]["documents"] == 3


def test_wikipedia_dump_through_ingest(tmp_path):
    dump = tmp_path / "wiki.xml.bz2"
    dump.write_bytes(bz2.compress(WIKI.read_bytes()))
    res = ingest([dump], CFG, tmp_path / "out")
    docs = docs_of(res)
    text = " ".join(s for d in docs for s in d["sentences"])
    assert docs and all(d["title"] for d in docs)
    for junk in ("{{", "}}", "[[", "]]", "<ref", "'''", "==", "Category:", "thumb"):
        assert junk not in text
    skipped = res.manifest["files"][0]["wiki_skipped"]
    assert skipped["redirects"] >= 1 and skipped["non_article"] >= 1


def test_duplicates_and_short_documents_are_dropped_and_counted(tmp_path):
    (tmp_path / "a.txt").write_text("Same text. Twice.\n\nUnique one. Here.\n")
    (tmp_path / "b.txt").write_text("Same text. Twice.\n\nTiny.\n")
    res = ingest([tmp_path / "a.txt", tmp_path / "b.txt"], IngestConfig(workers=1, min_doc_chars=10), tmp_path / "out")
    c = res.manifest["counts"]
    assert [d["sentences"] for d in docs_of(res)] == [["Same text. Twice."], ["Unique one. Here."]]  # BERT lines format
    assert (c["duplicates_dropped"], c["short_documents_dropped"]) == (1, 1)


def test_output_is_the_same_for_any_worker_count_and_cached(tmp_path):
    one = ingest([SAMPLE], IngestConfig(workers=1), tmp_path / "w1")
    two = ingest([SAMPLE], IngestConfig(workers=2), tmp_path / "w2")
    assert one.fingerprint == two.fingerprint
    for a, b in zip(sorted(one.path.glob("*.parquet")), sorted(two.path.glob("*.parquet")), strict=True):
        assert a.read_bytes() == b.read_bytes()
    again = ingest([SAMPLE], IngestConfig(workers=2), tmp_path / "w1")
    assert again.cached and again.path == one.path
    assert (tmp_path / "w1" / "latest").read_text().strip() == one.fingerprint


def test_invalid_utf8_names_file_and_byte_offset_or_is_counted(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"Good line here.\nBad \xff byte.\n")
    with pytest.raises(InputError, match=r"bad.txt: invalid UTF-8 at byte offset 20 \(line 2\)"):
        ingest([f], CFG, tmp_path / "out")
    assert not any((tmp_path / "out").glob("[0-9a-f]*")), "a failed run must publish nothing"
    res = ingest([f], CFG.model_copy(update={"encoding_errors": "replace"}), tmp_path / "out")
    assert res.manifest["counts"]["utf8_replacements"] == 1
    # counted, then deleted as BERT's tokenizer deletes U+FFFD
    assert docs_of(res)[0]["sentences"] == ["Good line here.", "Bad byte."]


def test_empty_and_binary_files_fail_the_stage_or_are_skipped_and_reported(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "ok.txt").write_text("A real sentence. And another one.\n")
    out = tmp_path.parent / (tmp_path.name + "-out")
    with pytest.raises(InputError, match=r"2 input file\(s\) read as nothing: .*blob.txt \(binary file \(NUL bytes\)\); "
                                         r".*empty.txt \(empty file\)"):
        ingest([tmp_path], CFG, out)
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]
    res = ingest([tmp_path], CFG.model_copy(update={"on_bad_file": "skip"}), out)
    status = {Path(f["path"]).name: f["status"] for f in res.manifest["files"]}
    assert status == {"blob.txt": "skipped:binary file (NUL bytes)", "empty.txt": "skipped:empty file", "ok.txt": "ok"}
    assert res.manifest["counts"]["files_skipped"] == 2


def test_empty_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match="empty corpus"):
        ingest([tmp_path / "empty.txt"], CFG.model_copy(update={"on_bad_file": "skip"}), tmp_path / "out")


def test_corrupt_zst_names_the_file(tmp_path):  # caught by the frame's checksum
    data = bytearray(zst(b"".join(json.dumps({"text": f"Sentence {i}. More."}).encode() + b"\n" for i in range(500))))
    data[len(data) // 2: len(data) // 2 + 16] = b"\xff" * 16
    (f := tmp_path / "bad.jsonl.zst").write_bytes(bytes(data))
    with pytest.raises(InputError, match="bad.jsonl.zst: corrupt or unreadable file"):
        ingest([f], CFG, tmp_path / "out")


def zst(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(write_checksum=True).compress(data)  # as the zstd command writes it


def test_zst_and_json_gz_read_the_same_documents_as_the_plain_file(tmp_path):
    import zstandard

    lines = b"".join(json.dumps({"text": f"Document {i} begins. It ends {i}."}).encode() + b"\n" for i in range(2000))
    (plain := tmp_path / "in" / "c.jsonl").parent.mkdir()
    plain.write_bytes(lines)
    half = lines.index(b"\n", len(lines) // 2) + 1  # two frames, as parallel zstd writes them
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "c.jsonl.zst").write_bytes(zst(lines[:half]) + zstandard.ZstdCompressor(level=9).compress(lines[half:]))
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "c.json.gz").write_bytes(gzip.compress(lines))
    def sentences(name: str) -> list:  # directories: the files are found by their names
        out = ingest([tmp_path / name], CFG, tmp_path / f"o-{name}").path
        return [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f, columns=["sentences"]).to_pylist()]

    rows = {name: sentences(name) for name in ("in", "z", "g")}
    assert rows["z"] == rows["in"] == rows["g"] and len(rows["in"]) == 2000


@pytest.mark.parametrize("suffix,opener", [(".jsonl.gz", gzip.compress), (".xml.bz2", bz2.compress), (".jsonl.zst", zst)])
def test_truncated_archives_fail_clearly_and_leave_nothing(tmp_path, suffix, opener):
    payload = (WIKI.read_bytes() if suffix.startswith(".xml") else
               b"".join(json.dumps({"text": f"Sentence {i}. Another."}).encode() + b"\n" for i in range(3000)))
    f = tmp_path / f"cut{suffix}"
    f.write_bytes(opener(payload)[:-40])
    with pytest.raises((InputError, ValueError), match="cut"):
        ingest([f], CFG, tmp_path / "out")
    left = [p.name for p in (tmp_path / "out").iterdir()] if (tmp_path / "out").exists() else []
    assert [n for n in left if not n.endswith(".lock")] == []  # nothing but the (empty) build lock


def test_bad_jsonl_record_names_file_line_and_field(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"text": "ok. fine."}\n{"txt": "wrong field"}\n')
    with pytest.raises(InputError, match=r"x.jsonl:2: field 'text' is missing \(fields present: txt\)"):
        ingest([f], CFG, tmp_path / "out")
    res = ingest([f], CFG.model_copy(update={"on_bad_record": "skip"}), tmp_path / "out")
    assert res.manifest["counts"]["bad_records_skipped"] == 1


def test_single_huge_line_and_one_sentence_documents(tmp_path):
    f = tmp_path / "huge.txt"
    words = ("lorem ipsum dolor sit amet consectetur " * 1_400_000).encode()  # ~54 MB, one line
    f.write_bytes(words[: 50 * 1024 * 1024] + b"\n\nJust one sentence.\n")
    res = ingest([f], IngestConfig(workers=1, max_sentence_chars=2000, text_format="lines", min_doc_chars=1), tmp_path / "out")
    docs = docs_of(res)
    assert len(docs) == 2
    assert max(len(s) for s in docs[0]["sentences"]) <= 2000
    assert docs[1]["sentences"] == ["Just one sentence."]


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        ingest([tmp_path / "nope.txt"], CFG, tmp_path / "out")


@pytest.mark.parametrize("codec", ["utf-16", "utf-32", "utf-8-sig", "utf-16-be"])
def test_text_marked_as_utf16_or_utf32_or_with_a_utf8_bom_is_decoded(tmp_path, codec):
    text = "Caf\u00e9 society met at n\u00fcn. Sie sa\u00dfen dort.\n\nA second document \u2013 with a dash.\n"
    (tmp_path / "utf8").mkdir()
    (tmp_path / "utf8" / "doc.txt").write_text(text, encoding="utf-8")
    (tmp_path / "marked").mkdir()
    data = text.encode(codec)
    if codec == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    (tmp_path / "marked" / "doc.txt").write_bytes(data)
    plain = ingest([tmp_path / "utf8"], CFG, tmp_path / "o1")
    marked = ingest([tmp_path / "marked"], CFG, tmp_path / "o2")
    assert [d["sentences"] for d in docs_of(marked)] == [d["sentences"] for d in docs_of(plain)]
    assert len(docs_of(plain)) == 2


def test_a_legacy_encoding_is_a_run_option_recorded_in_the_fingerprint(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "latin.txt").write_bytes("Un caf\u00e9 tr\u00e8s fran\u00e7ais. Voil\u00e0 tout.\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin.txt: invalid UTF-8 at byte offset 6 \(line 1\).*--encoding"):
        ingest([tmp_path / "in"], CFG, tmp_path / "o")
    res = ingest([tmp_path / "in"], CFG.model_copy(update={"encoding": "latin-1"}), tmp_path / "o")
    assert docs_of(res)[0]["sentences"] == ["Un caf\u00e9 tr\u00e8s fran\u00e7ais. Voil\u00e0 tout."]  # BERT's line format
    utf8 = IngestStage(CFG, [tmp_path / "in"]).fingerprint()
    assert res.fingerprint != utf8 == IngestStage(CFG.model_copy(update={"encoding": "utf-8"}), [tmp_path / "in"]).fingerprint()


def _peak_rss_mb(cmd: list[str]) -> float:
    import os
    import subprocess

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert status == 0, proc.stderr.read()[-2000:]
    return usage.ru_maxrss / 1024


def test_memory_does_not_follow_the_length_of_a_line(tmp_path):
    """One line of 40 MB (a corpus with its newlines lost) costs about what one of 2 MB does."""
    import sys

    words = (SAMPLE / "the-war-of-the-worlds-part.txt").read_text().split()
    line = " ".join(words)
    rss = {}
    for mb in (2, 40):
        src = tmp_path / f"line-{mb}.txt"
        with open(src, "w") as f:
            written = 0
            while written < mb << 20:
                f.write(line + " ")
                written += len(line) + 1
            f.write("\n")
        rss[mb] = _peak_rss_mb([sys.executable, "-m", "bertpipe.cli.main", "ingest", str(src), "--out",
                                str(tmp_path / f"out-{mb}"), "--workers", "1", "--text-format", "prose"])
    print(f"peak RSS: {rss}")
    assert rss[40] < rss[2] + 150, rss  # was about 1.6 GB for 50 MB: 30x the line
