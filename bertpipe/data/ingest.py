"""Stage 1, ingest: raw files of any supported format → cleaned, sentence-split documents.

Output (``<out>/<fingerprint>/``): ``part-NNNNN.parquet`` files, one per input file that
yielded documents, each row one document with columns ``id`` (string), ``source`` (input
file name), ``title`` (string, null when unknown), ``sentences`` (list<string>),
``n_chars`` (int64) and ``doc_hash`` (BLAKE2b-128 of the sentences joined by newlines, the
document's identity for duplicate dropping); plus ``manifest.json`` with counts, skips and
per-file reports.

Each input file is one unit of the stage (``bertpipe.core.stage``), streamed into a temporary
part that returns its documents' hashes; units run in parallel. Publishing then drops exact duplicates
across all files in input order (the first copy wins), keeping only 16-byte hashes in
memory, so memory is bounded by the number of distinct documents, not the corpus size. A
part without duplicates is renamed into place; only parts with duplicates are rewritten.
The output is the same whatever the number of workers, and wherever they run: the units
carry absolute paths (a Dask worker's working directory is not the caller's), while the
manifest records the input paths as they were given.

Skips are counted and reported, never silent: empty and binary files, documents shorter
than ``min_doc_chars``, duplicates, unsupported files inside a directory. Errors that make
the output untrustworthy (invalid UTF-8 in strict mode, truncated archives, malformed
records) abort the stage before anything is published.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from bertpipe.core.fingerprint import hash_file
from bertpipe.core.stage import MapUnits, Stage, StageResult, run_stage
from bertpipe.core.stagedir import commit_file
from bertpipe.data.formats import Format, codec_name, decide_text_format, detect_format, is_binary, wide_encoding
from bertpipe.data.neardup import NearDuplicates, document_signature, lsh_params
from bertpipe.data.quality import LINE_RULES, Rule, expand, failed_rule, filter_lines
from bertpipe.data.readers import InputError, ReadOptions, ReadStats, read_documents
from bertpipe.data import spans
from bertpipe.data.spans import Span, plan_spans, stage_decompressed, stageable

STAGE = "ingest"
VERSION = 2  # 2: text is a fixed point of BERT's clean_text (see bertpipe.data.text)
WIKITEXT_CLEANER = "wikitext-cleaner-2"  # 2: the scanner of bertpipe.data.wikitext (1: mwparserfromhell)
WIDE_TEXT_READER = "utf16-32-reader-1"
TEXT_FORMAT_IN_RUN_ENCODING = "text-format-in-run-encoding-1"
BZ2_BLOCK_SPANS = "bz2-block-spans-1"  # a single-stream .xml.bz2 read in units of blocks (was one unit)
STAGED_SPANS = "staged-spans-1"  # a large compressed JSONL or text file read in units of its copy (was one unit)
STAGED_PREFIX = ".staged-"
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("title", pa.string()),
        ("sentences", pa.list_(pa.string())),
        ("n_chars", pa.int64()),
        ("doc_hash", pa.binary(16)),
    ]
)
# Documents vary from tweets to books: a row group closes at 1024 documents or ~1 MB of text,
# so the shards stage can read just the groups a block needs.
_ROWS_PER_GROUP = 1024
_CHARS_PER_GROUP = 1_000_000


class IngestConfig(ReadOptions):
    """How raw files become documents: the reading options plus what is kept. Field names double as CLI flags."""

    min_doc_chars: int = Field(50, ge=0, description="drop documents with fewer characters (counted in the manifest)")
    # Off by default: the published heuristics suit web text; books and Wikipedia lose little to them.
    filters: list[Rule] = Field([], description="quality rules (bertpipe.data.quality): gopher, c4, or single rules "
                                "such as gopher_repetition; each counted in the manifest")
    dedupe: bool = Field(True, description="drop exact duplicate documents (first occurrence kept)")
    # Off by default (exact duplicates only); 0.8 is a common choice for web text (datatrove's
    # 14 x 8 bands aim near 0.72, text-dedup's default is 0.7).
    dedup_threshold: float | None = Field(None, gt=0, lt=1, description="also drop near-duplicates: documents whose "
                                          "word-shingle Jaccard with an earlier one is about this or more (MinHash LSH)")
    dedup_shingle: int = Field(5, ge=1, description="words per shingle for near-duplicates")
    dedup_perms: int = Field(128, ge=8, le=1024, description="MinHash functions for near-duplicates")
    on_bad_file: Literal["error", "skip"] = Field(
        "error", description="an input file read as nothing (empty, binary, no documents, unsupported in a directory): "
        "fail naming it, or skip it, counted and reported")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, description="parallel processes (output does not depend on it)")


@dataclass(frozen=True)
class FileUnit:
    """A span of one input file (``bertpipe.data.spans``), read into one raw Parquet part.

    ``path`` and ``part`` are absolute, made so where the stage is planned: a unit may run in
    another working directory (a Dask worker's). ``given`` is the input's path as the caller
    named it, which the reports and the manifest record."""

    path: Path
    format: Format
    content_hash: str
    part: Path
    given: str
    span: Span = Span()


@dataclass
class FileReport:
    path: str
    format: str
    content_hash: str
    status: str = "ok"  # ok | skipped:<reason>
    docs: int = 0
    short_docs: int = 0
    records: int = 0
    utf8_replacements: int = 0
    bad_records: int = 0
    wiki_skipped: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)  # documents per quality rule, lines per line rule
    # per-document facts for the dedupe pass (not written to the manifest)
    doc_hashes: list[bytes] = field(default_factory=list, repr=False)
    doc_sentences: list[int] = field(default_factory=list, repr=False)
    doc_chars: list[int] = field(default_factory=list, repr=False)
    doc_sigs: list[bytes] = field(default_factory=list, repr=False)  # MinHash signatures (with dedup_threshold)
    doc_ids: list[str] = field(default_factory=list, repr=False)  # (with dedup_threshold) for the examples

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("doc_")}


def expand_inputs(inputs: list[str | Path]) -> tuple[list[tuple[Path, Format]], list[dict[str, str]]]:
    """Files, directories (recursive) and glob patterns → sorted (path, format) list + skips."""
    found: list[tuple[Path, Format]] = []
    skipped: list[dict[str, str]] = []
    for item in inputs:
        s = str(item)
        matches = sorted(glob.glob(s, recursive=True)) if glob.has_magic(s) else [s]
        if not matches:
            raise InputError(f"{s}: pattern matches no file")
        for m in matches:
            p = Path(m)
            if p.is_dir():
                for f in sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")):
                    fmt = detect_format(f)
                    if fmt is None:
                        skipped.append({"path": str(f), "reason": "unsupported extension"})
                    else:
                        found.append((f, fmt))
            elif p.is_file():
                found.append((p, detect_format(p) or "text"))  # named explicitly: read as text
            else:
                raise InputError(f"{p}: no such file or directory")
    seen: set[Path] = set()
    unique = [(p, f) for p, f in found if not (p.resolve() in seen or seen.add(p.resolve()))]
    return unique, skipped


def _doc_hash(sentences: list[str]) -> bytes:
    return hashlib.blake2b("\n".join(sentences).encode(), digest_size=16).digest()


def _ingest_file(unit: FileUnit, cfg: IngestConfig) -> FileReport:
    """Stream one file into a Parquet part; report its documents' hashes and sizes."""
    path, fmt, part, span = unit.path, unit.format, unit.part, unit.span
    report = FileReport(unit.given, fmt, unit.content_hash)
    if path.stat().st_size == 0:
        report.status = "skipped:empty file"
        return report
    if fmt != "parquet" and is_binary(path, cfg.encoding):
        report.status = "skipped:binary file (NUL bytes)"
        return report
    stats = ReadStats()
    rules, filtered = expand(cfg.filters), Counter()
    schema = SCHEMA
    rows: dict[str, list] = {name: [] for name in schema.names}
    writer: pq.ParquetWriter | None = None
    group_chars = 0

    def flush() -> None:
        nonlocal writer, group_chars
        group_chars = 0
        if writer is None:
            writer = pq.ParquetWriter(part, schema, compression="zstd")
        writer.write_table(pa.table(rows, schema=schema))
        for v in rows.values():
            v.clear()

    try:
        for doc in read_documents(path, fmt, cfg, stats, span):
            if rules:
                lines = filter_lines(doc.sentences, filtered) if "c4_lines" in rules else doc.sentences
                if (failed := failed_rule(lines, rules)) is not None:
                    filtered[failed] += 1
                    continue
                doc = replace(doc, sentences=lines)
            n_chars = sum(len(s) for s in doc.sentences)
            if n_chars < max(cfg.min_doc_chars, 1):
                report.short_docs += 1
                continue
            h = _doc_hash(doc.sentences)
            for k, v in (("id", doc.id), ("source", path.name), ("title", doc.title), ("sentences", doc.sentences), ("n_chars", n_chars), ("doc_hash", h)):
                rows[k].append(v)
            report.doc_hashes.append(h)
            report.doc_sentences.append(len(doc.sentences))
            report.doc_chars.append(n_chars)
            if cfg.dedup_threshold is not None:
                report.doc_sigs.append(document_signature(doc.sentences, cfg.dedup_shingle, cfg.dedup_perms))
                report.doc_ids.append(doc.id)
            report.docs += 1
            group_chars += n_chars
            if len(rows["id"]) >= _ROWS_PER_GROUP or group_chars >= _CHARS_PER_GROUP:
                flush()
        if rows["id"]:
            flush()
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        with open(part, "rb") as f:
            os.fsync(f.fileno())
    report.records, report.utf8_replacements, report.bad_records = stats.records, stats.utf8_replacements, stats.bad_records
    report.wiki_skipped, report.filtered = stats.wiki_skipped, dict(filtered)
    return report


class IngestStage(Stage[IngestConfig]):
    """Input files → documents; one unit per file, duplicates dropped across files when published."""

    name, version = STAGE, VERSION
    distributable = True

    def __init__(self, cfg: IngestConfig, inputs: list[str | Path]) -> None:
        super().__init__(cfg)
        self.inputs = [str(i) for i in inputs]
        self.files, self.unsupported = expand_inputs(inputs)
        if not self.files:
            raise InputError(f"no readable input files in {', '.join(self.inputs)}")
        self.workers = cfg.workers

    @classmethod
    def fingerprint_config(cls, cfg: IngestConfig) -> dict[str, Any]:
        # on_bad_file decides whether a stage fails, never what it writes; utf-8 is how every
        # input was read before the option existed (and no filters how every input was kept), so
        # they are left out at those values and old outputs keep their names
        return cfg.model_dump(mode="json", exclude={"workers", "on_bad_file"} | ({"encoding"} if cfg.encoding == "utf-8" else set())
                              | ({"filters"} if not cfg.filters else set())
                              | ({"dedup_threshold", "dedup_shingle", "dedup_perms"} if cfg.dedup_threshold is None else set()))

    def upstream(self) -> list[str]:
        hashes = [hash_file(p) for p, _ in self.files]  # content, in input order
        # MediaWiki inputs also name the cleaner that reads them, and UTF-16/32 inputs the decoder
        # that reads them (they were skipped as binary before), so a new reader re-reads them
        # without renaming the outputs of any other corpus (a VERSION bump would rename all)
        wide = any(f in ("text", "jsonl") and wide_encoding(p, self.cfg.encoding) for p, f in self.files)
        # a single-stream .xml.bz2 is now cut into units: the same documents in more parts
        blocks = any(f == "wiki" and p.name.lower().endswith(".bz2") and p.stat().st_size > spans.UNIT_BYTES
                     and plan_spans(p, f, self.cfg.text_format, self.cfg.doc_break_blank_lines)[0].bits for p, f in self.files)
        return (hashes + ([WIKITEXT_CLEANER] if any(f == "wiki" for _, f in self.files) else [])
                + ([WIDE_TEXT_READER] if wide else []) + ([TEXT_FORMAT_IN_RUN_ENCODING] if self._rejudged() else [])
                + ([BZ2_BLOCK_SPANS] if blocks else []) + ([STAGED_SPANS] if any(stageable(p, f) for p, f in self.files) else []))

    def _rejudged(self) -> bool:
        """Whether, in a run with another encoding than UTF-8, a plain-text file is judged lines or
        prose differently in that encoding than decoded as UTF-8 (as the span planner judged it
        before): only the corpora whose output that changes get a new name."""
        enc = self.cfg.encoding
        return self.cfg.text_format == "auto" and codec_name(enc) != "utf-8" and any(
            f == "text" and not wide_encoding(p, enc) and decide_text_format(p, enc) != decide_text_format(p, "utf-8")
            for p, f in self.files)

    def plan(self, out: Path) -> list[FileUnit]:
        cfg, out = self.cfg, out.absolute()  # units carry absolute paths (see FileUnit); the reports, the names given
        units = []
        for k, ((p, f), h) in enumerate(zip(self.files, self.upstream()[: len(self.files)], strict=True)):
            if wide_encoding(p, cfg.encoding):
                units.append((p, f, h, Span()))
                continue
            read = p
            if stageable(p, f):  # one compressed stream: cut its decompressed copy (bertpipe.data.spans)
                try:
                    read = stage_decompressed(p, out / f"{STAGED_PREFIX}{k:05d}.{f}")
                except (OSError, EOFError) as e:
                    raise InputError(f"{p}: corrupt or truncated compressed file ({e})") from e
            for span in plan_spans(read, f, cfg.text_format, cfg.doc_break_blank_lines, encoding=cfg.encoding):
                units.append((p, f, h, replace(span, staged=str(read)) if read != p else span))
        return [FileUnit(p.absolute(), f, h, out / f".raw-{i:05d}.parquet", str(p), span)
                for i, (p, f, h, span) in enumerate(units)]

    def run_unit(self, unit: FileUnit) -> FileReport:
        return _ingest_file(unit, self.cfg)

    def publish(self, out: Path, reports: list[FileReport]) -> dict[str, Any]:
        cfg = self.cfg
        near = NearDuplicates(cfg.dedup_threshold, cfg.dedup_perms) if cfg.dedup_threshold is not None else None
        for copy in out.glob(f"{STAGED_PREFIX}*"):  # the decompressed copies the units read
            copy.unlink()
        counts = _dedupe_parts([out / f".raw-{i:05d}.parquet" for i in range(len(reports))], reports, out, cfg.dedupe, near)
        examples = counts.pop("near_duplicate_examples")
        reports = _per_file(reports)
        bad = [f"{r.path} ({r.status.split(':', 1)[1]})" for r in reports if r.status != "ok"]
        bad += [f"{u['path']} ({u['reason']})" for u in self.unsupported]
        if bad and cfg.on_bad_file == "error":
            raise InputError(f"{len(bad)} input file(s) read as nothing: {'; '.join(bad[:10])}"
                             f"{' ...' if len(bad) > 10 else ''}; pass --on-bad-file skip to ingest without them")
        if counts["documents"] == 0:
            raise InputError(
                "empty corpus: no documents left after ingest "
                f"({len(reports)} files; skipped: {[r.path + ' (' + r.status + ')' for r in reports if r.status != 'ok'] or 'none'}; "
                f"short documents dropped: {sum(r.short_docs for r in reports)} under {cfg.min_doc_chars} chars)"
            )
        return {
            "config": self.fingerprint_config(cfg),
            "schema": {f.name: str(f.type) for f in SCHEMA},
            "bert_clean": True,  # sentences need no clean_text step in the tokenizer
            "counts": counts
            | {
                "files": len(reports),
                "files_skipped": sum(r.status != "ok" for r in reports) + len(self.unsupported),
                "short_documents_dropped": sum(r.short_docs for r in reports),
                "utf8_replacements": sum(r.utf8_replacements for r in reports),
                "bad_records_skipped": sum(r.bad_records for r in reports),
            } | _filter_counts(expand(cfg.filters), reports),
            "files": [r.public() for r in reports],
            **({"near_duplicates": {"threshold": cfg.dedup_threshold, "shingle": cfg.dedup_shingle, "perms": cfg.dedup_perms,
                                    "bands_rows": list(lsh_params(cfg.dedup_threshold, cfg.dedup_perms)),
                                    "examples": examples}} if near is not None else {}),
            "unsupported": self.unsupported,
        }


def ingest(inputs: list[str | Path], cfg: IngestConfig, out_root: Path, progress: bool = False,
           map_units: MapUnits | None = None) -> StageResult:
    """Run the ingest stage into ``out_root/<fingerprint>/`` (or reuse the complete output there)."""
    return run_stage(IngestStage(cfg, inputs), out_root, progress=progress, map_units=map_units)


def _filter_counts(rules: tuple[str, ...], reports: list[FileReport]) -> dict[str, int]:
    """``filtered_<rule>`` (documents) and ``lines_removed_<rule>`` (lines) for every rule on, zeros included."""
    total = sum((Counter(r.filtered) for r in reports), Counter())
    lines = LINE_RULES if "c4_lines" in rules else ()
    return ({f"filtered_{r}": total[r] for r in rules if r != "c4_lines"} | {f"lines_removed_{r}": total[r] for r in lines})


def _per_file(reports: list[FileReport]) -> list[FileReport]:
    """The units' reports summed per input file, in input order (a file's first non-ok status wins)."""
    files: dict[str, FileReport] = {}
    for r in reports:
        if (f := files.get(r.path)) is None:
            files[r.path] = replace(r, wiki_skipped=dict(r.wiki_skipped), filtered=dict(r.filtered), doc_hashes=[],
                                    doc_sentences=[], doc_chars=[], doc_sigs=[], doc_ids=[])
            continue
        f.status = f.status if f.status != "ok" else r.status
        for k in ("docs", "short_docs", "records", "utf8_replacements", "bad_records"):
            setattr(f, k, getattr(f, k) + getattr(r, k))
        for k, v in r.wiki_skipped.items():
            f.wiki_skipped[k] = f.wiki_skipped.get(k, 0) + v
        for k, v in r.filtered.items():
            f.filtered[k] = f.filtered.get(k, 0) + v
    for f in files.values():
        if f.docs == 0 and f.short_docs == 0 and f.status == "ok":
            f.status = "skipped:no documents"
    return list(files.values())


def _dedupe_parts(parts: list[Path], reports: list[FileReport], out: Path, dedupe: bool,
                  near: NearDuplicates | None = None) -> dict[str, Any]:
    """Publish raw parts as final parts in input order, dropping repeated document hashes (and,
    with ``near``, near-duplicates of earlier documents; up to 10 examples as (kept, dropped) ids)."""
    seen: set[bytes] = set()
    counts: dict[str, Any] = {"documents": 0, "duplicates_dropped": 0, "sentences": 0, "characters": 0}
    counts |= {"near_duplicates_dropped": 0} if near is not None else {}
    ids: list[str] = []  # with near: every offered document's id, by its index there
    examples: list[list[str]] = []
    n_out = 0
    for raw, report in zip(parts, reports, strict=True):
        if not raw.exists():
            continue
        keep = []
        for i, h in enumerate(report.doc_hashes):
            exact = dedupe and h in seen
            seen.add(h)
            if exact:
                counts["duplicates_dropped"] += 1
            elif near is not None:
                ids.append(f"{report.path}: {report.doc_ids[i]}")
                if (match := near.seen(report.doc_sigs[i])) is not None:
                    counts["near_duplicates_dropped"] += 1
                    if len(examples) < 10:
                        examples.append([ids[match], ids[-1]])
                    keep.append(False)
                    continue
            keep.append(not exact)
        n_keep = sum(keep)
        counts["sentences"] += sum(n for n, k in zip(report.doc_sentences, keep, strict=True) if k)
        counts["characters"] += sum(n for n, k in zip(report.doc_chars, keep, strict=True) if k)
        if n_keep == 0:
            raw.unlink()
            continue
        final = out / f"part-{n_out:05d}.parquet"
        if n_keep < len(keep):  # rare: rewrite without the duplicates, row group by row group
            tmp = final.with_name(final.name + ".tmp")
            pf, offset = pq.ParquetFile(raw), 0
            with pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as writer:
                for g in range(pf.num_row_groups):
                    table = pf.read_row_group(g)
                    mask = pa.array(keep[offset : offset + table.num_rows])
                    offset += table.num_rows
                    if (table := table.filter(mask)).num_rows:
                        writer.write_table(table)
            raw.unlink()
            raw = tmp
        commit_file(raw, final)
        counts["documents"] += n_keep
        n_out += 1
    counts["parts"] = n_out
    return counts | {"near_duplicate_examples": examples}
