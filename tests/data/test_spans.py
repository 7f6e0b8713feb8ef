"""Units inside one input file: every format cut into spans reads back the whole file's documents."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertpipe.data import spans
from bertpipe.data.ingest import IngestConfig, IngestStage, ingest
from bertpipe.data.readers import ReadStats, read_documents
from bertpipe.data.spans import plan_spans
from tests.conftest import FIXTURES, SAMPLE


@pytest.fixture
def inputs(tmp_path):
    """One file per format, each several times the small unit size used below."""
    text = (SAMPLE / "the-war-of-the-worlds-part.txt").read_text()
    with gzip.open(SAMPLE / "sotu-sample.jsonl.gz", "rt") as f:
        records = [json.loads(line) for line in f]
    out = {"prose": tmp_path / "book.txt", "lines": tmp_path / "bert.txt", "jsonl": tmp_path / "speeches.jsonl",
           "parquet": tmp_path / "speeches.parquet", "wiki": tmp_path / "dump.xml"}
    out["prose"].write_text(text)
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    out["lines"].write_text("\n\n".join("\n".join(s + "." for s in p.split(". ") if s) for p in paragraphs) + "\n")
    out["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in records))
    pq.write_table(pa.table({"text": [r["text"] for r in records], "id": [r["id"] for r in records]}), out["parquet"],
                   row_group_size=3)
    dump = (FIXTURES / "wiki_fragment.xml").read_text()
    head, _, rest = dump.partition("  <page>")
    pages, _, tail = ("  <page>" + rest).rpartition("</page>")
    out["wiki"].write_text(head + (pages + "</page>\n") * 20 + tail)  # the fixture's pages, 20 times
    return out


def documents(path, fmt, cfg, span=spans.Span()):
    stats = ReadStats()
    return [(d.id, d.title, d.sentences) for d in read_documents(path, fmt, cfg, stats, span)], stats


@pytest.mark.parametrize("kind", ["prose", "lines", "jsonl", "parquet", "wiki"])
def test_spans_read_back_the_whole_files_documents(inputs, kind):
    path = inputs[kind]
    fmt = {"prose": "text", "lines": "text"}.get(kind, kind)
    cfg = IngestConfig(text_format="auto")
    cut = plan_spans(path, fmt, cfg.text_format, cfg.doc_break_blank_lines, unit_bytes=max(2000, path.stat().st_size // 9))
    assert len(cut) >= 4, cut
    whole, whole_stats = documents(path, fmt, cfg)
    pieces, records = [], 0
    for span in cut:
        docs, stats = documents(path, fmt, cfg, span)
        pieces += docs
        records += stats.records
    assert len(whole) > len(cut) and pieces == whole and records == whole_stats.records
    if fmt == "text":
        assert {s.text_format for s in cut} == {kind}, "auto is decided once per file"


def test_ingest_output_does_not_depend_on_unit_size_or_workers(inputs, tmp_path, monkeypatch):
    files = [inputs[k] for k in ("prose", "jsonl", "wiki", "parquet")]

    def rows(res):
        return [r for p in sorted(res.path.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]

    one = ingest(files, IngestConfig(workers=1), tmp_path / "whole")
    monkeypatch.setattr(spans, "UNIT_BYTES", 20_000)
    units = IngestStage(IngestConfig(workers=2), files).plan(tmp_path)
    assert len(units) > 2 * len(files)
    many = ingest(files, IngestConfig(workers=2), tmp_path / "split")
    again = ingest(files, IngestConfig(workers=1), tmp_path / "split-1")
    assert many.fingerprint == one.fingerprint and rows(many) == rows(one)
    assert len(list(many.path.glob("part-*.parquet"))) > len(list(one.path.glob("part-*.parquet")))  # one part per unit
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(sorted(many.path.glob("part-*")), sorted(again.path.glob("part-*"))))
    assert many.manifest["counts"] == one.manifest["counts"] | {"parts": many.manifest["counts"]["parts"]}
    assert many.manifest["files"] == one.manifest["files"], "reports are per input file, not per unit"


def test_compressed_and_small_files_stay_whole(tmp_path):
    assert plan_spans(SAMPLE / "sotu-sample.jsonl.gz", "jsonl", "auto", 3, unit_bytes=1000) == [spans.Span()]
    small = tmp_path / "small.txt"
    small.write_text("One sentence.\n\nAnother one.\n")
    assert plan_spans(small, "text", "auto", 3) == [spans.Span(text_format="lines")]


def _multistream(xml: bytes, cuts: list[int]) -> bytes:
    import bz2

    return b"".join(bz2.compress(xml[a:b]) for a, b in zip([0, *cuts], [*cuts, len(xml)], strict=True))


@pytest.mark.parametrize("aligned", [True, False])
def test_a_multistream_bz2_dump_splits_at_streams(inputs, tmp_path, aligned):
    """Wikipedia's multistream files have streams of whole pages; pbzip2's cut anywhere. Both read back."""
    xml = inputs["wiki"].read_bytes()
    if aligned:  # the header alone, then 5 pages a stream, as Wikipedia does
        starts = [i for i in range(len(xml)) if xml.startswith(b"  <page>", i)]
        cuts = starts[::5] + [xml.rindex(b"</mediawiki>")]
    else:
        cuts = list(range(7_777, len(xml), 7_777))
    dump = tmp_path / "dump.xml.bz2"
    dump.write_bytes(_multistream(xml, cuts))
    cfg = IngestConfig()
    cut = plan_spans(dump, "wiki", "auto", 3, unit_bytes=dump.stat().st_size // 6)
    assert len(cut) >= 4 and all(s.start > 0 for s in cut[1:])
    whole, _ = documents(dump, "wiki", cfg)
    assert len(whole) > len(cut)
    assert [d for span in cut for d in documents(dump, "wiki", cfg, span)[0]] == whole


def test_a_truncated_bz2_span_is_an_error(inputs, tmp_path):
    xml = inputs["wiki"].read_bytes()
    data = _multistream(xml, list(range(20_000, len(xml), 20_000)))
    dump = tmp_path / "cut.xml.bz2"
    dump.write_bytes(data[: len(data) - 100])
    cut = plan_spans(dump, "wiki", "auto", 3, unit_bytes=len(data) // 4)
    with pytest.raises(Exception, match="truncated|incomplete|ends early"):
        documents(dump, "wiki", IngestConfig(), cut[-1])


def test_a_file_in_the_runs_encoding_is_judged_alike_whole_or_in_spans(tmp_path, monkeypatch):
    """cp1252 text in BERT's line format whose every other sentence ends in a curly quote: the
    span planner judged it on a UTF-8 decoding (where the quote is U+FFFD, so 50% of lines end
    like a sentence: prose), the reader in the run's encoding (100%: lines)."""
    path = tmp_path / "quotes.txt"
    path.write_bytes("\n".join(f"Speaker {d} rose and said: \u201cWe stay.\u201d\nThe hall was quiet after speech number {d}.\n"
                               for d in range(400)).encode("cp1252"))
    cfg = IngestConfig(encoding="cp1252", workers=1)
    whole, _ = documents(path, "text", cfg)
    assert len(whole) == 400 and whole[7][2] == ["Speaker 7 rose and said: \u201cWe stay.\u201d",
                                                  "The hall was quiet after speech number 7."]

    def rows(res):
        return [(r["id"], r["sentences"]) for p in sorted(res.path.glob("part-*.parquet"))
                for r in pq.read_table(p, columns=["id", "sentences"]).to_pylist()]

    expected = [(i, s) for i, _, s in whole]
    assert rows(ingest([path], cfg, tmp_path / "one-unit")) == expected
    monkeypatch.setattr(spans, "UNIT_BYTES", 4000)
    assert len(IngestStage(cfg, [path]).plan(tmp_path)) >= 4
    for workers in (1, 2):
        res = ingest([path], cfg.model_copy(update={"workers": workers}), tmp_path / f"spans-{workers}")
        assert rows(res) == expected


def test_a_single_stream_bz2_dump_splits_at_blocks(inputs, tmp_path, monkeypatch):
    """Wikimedia's pages-articles.xml.bz2 is one bzip2 stream: its units start at bzip2 blocks."""
    import bz2

    xml = inputs["wiki"].read_bytes()
    head, _, rest = xml.decode().partition("  <page>")
    pages, _, tail = ("  <page>" + rest).rpartition("</page>")
    xml = (head + (pages + "</page>\n") * 12 + tail).encode()  # 240 pages, a dozen 100 kB blocks at level 1
    dump = tmp_path / "dump.xml.bz2"
    dump.write_bytes(bz2.compress(xml, 1))
    cut = plan_spans(dump, "wiki", "auto", 3, unit_bytes=dump.stat().st_size // 6)
    assert len(cut) >= 4 and all(s.bits for s in cut) and len({s.start % 8 for s in cut}) > 1
    cfg = IngestConfig()
    plain = tmp_path / "dump.xml"
    plain.write_bytes(xml)
    whole, _ = documents(dump, "wiki", cfg)
    assert len(whole) > 2 * len(cut) and whole == documents(plain, "wiki", cfg)[0]
    assert [d for span in cut for d in documents(dump, "wiki", cfg, span)[0]] == whole

    def rows(res):
        return [r for p in sorted(res.path.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]

    monkeypatch.setattr(spans, "UNIT_BYTES", dump.stat().st_size // 5)
    one, two = (ingest([dump], IngestConfig(workers=w, dedupe=False), tmp_path / f"w{w}") for w in (1, 2))  # pages repeat
    assert len(list(one.path.glob("part-*"))) >= 4 and one.manifest["files"][0]["docs"] == len(whole)
    assert [a.read_bytes() for a in sorted(one.path.glob("part-*"))] == [b.read_bytes() for b in sorted(two.path.glob("part-*"))]
    ref = ingest([plain], IngestConfig(workers=1, dedupe=False), tmp_path / "plain")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "source"} for r in rs]  # noqa: E731 (file names differ)
    assert strip(rows(one)) == strip(rows(ref))


@pytest.mark.parametrize("suffix", [".gz", ".zst", ".bz2"])
def test_a_large_compressed_file_is_cut_through_its_decompressed_copy(inputs, tmp_path, monkeypatch, suffix):
    """One gzip, Zstandard or bzip2 stream: decompressed once, then read in units at any worker count."""
    import bz2

    import zstandard

    pack = {".gz": gzip.compress, ".zst": zstandard.ZstdCompressor().compress, ".bz2": bz2.compress}[suffix]
    files = [inputs["jsonl"], inputs["prose"]]
    packed = [tmp_path / "packed" / (f.name + suffix) for f in files]
    packed[0].parent.mkdir()
    for f, g in zip(files, packed, strict=True):
        g.write_bytes(pack(f.read_bytes()))

    def rows(res):
        return [{**r, "source": None, "id": r["id"].replace(suffix, "")}  # the names differ by the suffix only
                for p in sorted(res.path.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]

    ref = ingest(files, IngestConfig(workers=1), tmp_path / "plain")
    monkeypatch.setattr(spans, "UNIT_BYTES", min(g.stat().st_size for g in packed) // 2)
    one, two = (ingest(packed, IngestConfig(workers=w), tmp_path / f"w{w}") for w in (1, 2))
    assert len(list(one.path.glob("part-*"))) >= 4 > len(list(ref.path.glob("part-*")))
    assert [a.read_bytes() for a in sorted(one.path.glob("part-*"))] == [b.read_bytes() for b in sorted(two.path.glob("part-*"))]
    assert rows(one) == rows(ref) and not list(one.path.glob(".staged-*"))
    assert one.manifest["files"][0]["path"] == str(packed[0]) and one.manifest["counts"]["documents"] == ref.manifest["counts"]["documents"]


def test_a_corrupt_large_compressed_file_is_an_error_naming_it(tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"text": "one two three four"}\n' * 5000)[:-40])
    monkeypatch.setattr(spans, "UNIT_BYTES", 100)  # staged: the plan finds it
    with pytest.raises(Exception, match="bad.jsonl.gz: corrupt or truncated compressed file"):
        ingest([bad], IngestConfig(workers=1), tmp_path / "out")
