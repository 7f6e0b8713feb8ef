"""Recreate data/sample/ from ../shared/data/corpora (deterministic; see data/sample/README.md)."""

import gzip
import io
import json
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpora"
OUT = Path(__file__).resolve().parents[1] / "data" / "sample"
YEARS = (1801, 1823, 1862, 1901, 1934, 1941, 1962, 1974, 1987, 1996, 2002, 2014)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in gzip.open(SHARED / "sotu.jsonl.gz", "rt")]
    gz = gzip.GzipFile(OUT / "sotu-sample.jsonl.gz", "wb", compresslevel=9, mtime=0)  # mtime=0: reproducible bytes
    with io.TextIOWrapper(gz, encoding="utf-8") as f:
        for r in rows:
            if int(r["id"].split("-")[1]) in YEARS:
                text = " ".join(r["text"].split(" ")[:2200])
                f.write(json.dumps({"id": r["id"], "title": r["title"], "text": text}) + "\n")
    lines = (SHARED / "gutenberg" / "the-war-of-the-worlds.txt").read_text().split("\n")
    (OUT / "the-war-of-the-worlds-part.txt").write_text("\n".join(lines[:2600]) + "\n")


if __name__ == "__main__":
    main()
