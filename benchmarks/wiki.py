"""MediaWiki ingest against WikiExtractor on the same dump (prints figures, asserts nothing).

``bench_wiki`` runs, one after the other on one dump:

(a) bertpipe's real ingest stage (``bertpipe.data.ingest.ingest``, MediaWiki reader, sentence
    splitting, Parquet) in a fresh subprocess;
(b) WikiExtractor 3.x from PyPI (``pip install wikiextractor``; benchmark-only, never a
    dependency) as a subprocess: ``python -m wikiextractor.WikiExtractor DUMP -o DIR --json
    --processes N --html-safe ""`` (``--html-safe ""`` turns off its re-escaping of ``&<>``,
    which would otherwise count against it as ``&amp;``/``&lt;`` residue).

Both are measured the same way: wall seconds around the subprocess, CPU seconds from
``RUSAGE_CHILDREN`` (the process tree, workers included), throughput as dump MB (10^6 bytes
on disk) per wall second and per CPU-second. Documents are aligned by page id; for each
output it counts per document the markup residue patterns below, and for every article of
200+ words in WikiExtractor's output the ratio of words bertpipe keeps to words
WikiExtractor keeps (a missing or dropped article counts as 0). The last printed line is
one JSON object, also returned.

Usage: ``python -m benchmarks.wiki DUMP [--work DIR] [--processes N]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.data import _peak_rss_of

RESIDUE = ["{{", "}}", "[[", "]]", "'''", "<ref", "{|", "|}", "|-", "bgcolor", "colspan", "rowspan",
           "&lt;", "&amp;", "[http"]
MIN_WORDS = 200  # articles this long in WikiExtractor's output get a word ratio
LOW_RATIO = 0.8


def _measured(cmd: list[str]) -> dict:
    """Run ``cmd``; its wall seconds, CPU seconds (its whole tree), peak RSS and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak, wall = _peak_rss_of(proc)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"bench wiki: {' '.join(cmd[:4])} ... failed ({proc.returncode}); its stderr is above")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak / 2**20, "stdout": out}


def _ingest_main(dump: str, out: str, processes: str) -> None:
    """Child process for (a): the ingest stage, its worker tree reaped before exiting."""
    from bertpipe.core.workers import stop_forkserver
    from bertpipe.data.ingest import IngestConfig, ingest

    res = ingest([Path(dump)], IngestConfig(workers=int(processes)), Path(out))
    stop_forkserver()  # so RUSAGE_CHILDREN in the parent sees all the workers' CPU
    print(json.dumps({"path": str(res.path), "counts": res.manifest["counts"]}))


def _read_ours(stage_dir: Path) -> dict[str, tuple[str, str]]:
    import pyarrow.parquet as pq

    docs: dict[str, tuple[str, str]] = {}
    for part in sorted(stage_dir.glob("part-*.parquet")):
        t = pq.read_table(part, columns=["id", "title", "sentences"]).to_pydict()
        for i, title, sentences in zip(t["id"], t["title"], t["sentences"], strict=True):
            docs[str(i)] = (title or "", " ".join(sentences))
    return docs


def _read_wikiextractor(out: Path) -> dict[str, tuple[str, str]]:
    docs: dict[str, tuple[str, str]] = {}
    for f in sorted(out.rglob("wiki_*")):
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    docs[str(rec["id"])] = (rec["title"], rec["text"])
    return docs


def _residue(docs: dict[str, tuple[str, str]], ids: set[str]) -> dict[str, float]:
    """Occurrences of each pattern per document, over the documents ``ids``."""
    n = max(len(ids), 1)
    return {p: sum(docs[i][1].count(p) for i in ids) / n for p in RESIDUE}


def _word_ratios(ours: dict[str, tuple[str, str]], theirs: dict[str, tuple[str, str]]) -> list[tuple[float, str, int, int]]:
    """(ours/theirs words, title, our words, their words) for their articles of MIN_WORDS+ words."""
    rows = []
    for pid, (title, text) in theirs.items():
        n_theirs = len(text.split())
        if n_theirs >= MIN_WORDS:
            n_ours = len(ours[pid][1].split()) if pid in ours else 0
            rows.append((n_ours / n_theirs, title, n_ours, n_theirs))
    return sorted(rows)


def bench_wiki(dump: Path, work: Path, processes: int = 1, repeats: int = 1) -> dict:
    """Measure bertpipe's MediaWiki ingest and WikiExtractor on ``dump`` (see the module doc);
    with ``repeats`` > 1 the two alternate and each figure is the run of median CPU time."""
    dump, work, repeats = Path(dump), Path(work), max(1, repeats)
    if importlib.util.find_spec("wikiextractor") is None:
        raise FileNotFoundError("bench wiki: WikiExtractor is not installed; pip install wikiextractor")
    if not dump.is_file():
        raise FileNotFoundError(f"bench wiki: no dump at {dump}")
    mb = dump.stat().st_size / 1e6
    ours_dir, we_dir = work / "bertpipe", work / "wikiextractor"
    work.mkdir(parents=True, exist_ok=True)

    ours_cmd = [sys.executable, "-m", "benchmarks.wiki", "_ingest", str(dump), str(ours_dir), str(processes)]
    we_cmd = [sys.executable, "-m", "wikiextractor.WikiExtractor", str(dump), "-o", str(we_dir), "--json",
              "--processes", str(processes), "--html-safe", "", "--quiet"]
    ours_runs, we_runs = [], []
    for _ in range(repeats):  # alternating, so both see the same machine load
        for d in (ours_dir, we_dir):
            shutil.rmtree(d, ignore_errors=True)
        ours_runs.append(_measured(ours_cmd))
        we_runs.append(_measured(we_cmd))
    stage = json.loads(ours_runs[-1]["stdout"].strip().splitlines()[-1])
    ours_run, we_run = (sorted(runs, key=lambda r: r["cpu_s"])[len(runs) // 2] for runs in (ours_runs, we_runs))
    for r in (*ours_runs, *we_runs):
        r.pop("stdout", None)

    ours, theirs = _read_ours(Path(stage["path"])), _read_wikiextractor(we_dir)
    common = set(ours) & set(theirs)  # both outputs, aligned by page id
    res_ours, res_theirs = _residue(ours, common), _residue(theirs, common)
    ratios = _word_ratios(ours, theirs)
    low = [r for r in ratios if r[0] < LOW_RATIO]
    words_ours = sum(len(t.split()) for _, t in ours.values())
    words_theirs = sum(len(t.split()) for _, t in theirs.values())

    runs = {"bertpipe": ours_run, "wikiextractor": we_run}
    for r in runs.values():
        r["mb_per_s"] = mb / r["wall_s"]
        r["mb_per_cpu_s"] = mb / r["cpu_s"]
    print(f"dump {dump} ({mb:.1f} MB), {processes} process(es), {repeats} run(s) each (median by CPU); "
          f"documents: bertpipe {len(ours):,}, WikiExtractor {len(theirs):,}, in both {len(common):,}")
    print("  bertpipe:      " + " ".join(ours_cmd[1:]))
    print("  WikiExtractor: " + " ".join(we_cmd[1:]).replace("--html-safe  ", '--html-safe "" '))
    print(f"{'':16}{'wall s':>9}{'CPU s':>9}{'MB/s':>9}{'MB/CPU-s':>10}{'peak RSS MB':>13}{'words':>13}")
    for name, r, w in (("bertpipe", ours_run, words_ours), ("WikiExtractor", we_run, words_theirs)):
        print(f"{name:16}{r['wall_s']:9.2f}{r['cpu_s']:9.2f}{r['mb_per_s']:9.2f}{r['mb_per_cpu_s']:10.2f}"
              f"{r['peak_rss_mb']:13.0f}{w:13,}")
    print(f"speed per CPU-second: bertpipe / WikiExtractor = {ours_run['mb_per_cpu_s'] / we_run['mb_per_cpu_s']:.2f}")
    print(f"residue per document (the {len(common):,} in both) {'bertpipe':>10}{'WikiExtr.':>11}")
    for p in RESIDUE:
        print(f"  {p!r:39}{res_ours[p]:10.4f}{res_theirs[p]:11.4f}")
    print(f"  {'all':39}{sum(res_ours.values()):10.4f}{sum(res_theirs.values()):11.4f}")
    if ratios:
        print(f"word ratio bertpipe/WikiExtractor over {len(ratios):,} articles of {MIN_WORDS}+ words: "
              f"min {ratios[0][0]:.3f}, median {ratios[len(ratios) // 2][0]:.3f}, under {LOW_RATIO}: {len(low)}")
        for ratio, title, n_ours, n_theirs in ratios[:5]:
            print(f"  {ratio:.3f}  {title} ({n_ours:,} / {n_theirs:,} words)")
    result = {
        "dump": str(dump),
        "dump_mb": round(mb, 2),
        "processes": processes,
        "repeats": repeats,
        "cpu_s_runs_bertpipe": [round(r["cpu_s"], 3) for r in ours_runs],
        "cpu_s_runs_wikiextractor": [round(r["cpu_s"], 3) for r in we_runs],
        **{f"{name}_{k}": round(v, 3) for name, r in runs.items() for k, v in r.items()},
        "cpu_speed_ratio": round(ours_run["mb_per_cpu_s"] / we_run["mb_per_cpu_s"], 3),
        "documents_bertpipe": len(ours),
        "documents_wikiextractor": len(theirs),
        "documents_in_both": len(common),
        "words_bertpipe": words_ours,
        "words_wikiextractor": words_theirs,
        "residue_per_doc_bertpipe": {p: round(v, 5) for p, v in res_ours.items()},
        "residue_per_doc_wikiextractor": {p: round(v, 5) for p, v in res_theirs.items()},
        "residue_total_bertpipe": round(sum(res_ours.values()), 5),
        "residue_total_wikiextractor": round(sum(res_theirs.values()), 5),
        "articles_compared": len(ratios),
        "word_ratio_min": round(ratios[0][0], 4) if ratios else None,
        "word_ratio_median": round(ratios[len(ratios) // 2][0], 4) if ratios else None,
        "articles_under_ratio": len(low),
        "worst_articles": [{"title": t, "ratio": round(r, 4), "words_bertpipe": a, "words_wikiextractor": b}
                           for r, t, a, b in ratios[:5]],
        "ingest_counts": stage["counts"],
    }
    print(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wiki", description=__doc__.split("\n\n")[0])
    parser.add_argument("dump", type=Path, help="MediaWiki XML dump (.xml or .xml.bz2)")
    parser.add_argument("--work", type=Path, help="where both outputs go (default: a temporary folder, removed after)")
    parser.add_argument("--processes", type=int, default=1, help="processes for each extractor (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, alternating; the median by CPU is reported")
    args = parser.parse_args(argv)
    if args.work is not None:
        bench_wiki(args.dump, args.work, args.processes, args.repeats)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bertpipe-bench-wiki-"))
    try:
        bench_wiki(args.dump, tmp, args.processes, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_ingest":
        _ingest_main(*sys.argv[2:])
    else:
        main()
