"""Recreate the bundled corpora from ../shared/data/corpora (deterministic; see data/sample/README.md).

* ``data/sample/``: the sample corpus of ``make run`` and the ``tiny`` preset, 3.3M
  characters in 339 documents: the first 1,500 words of each of the 233 State of the Union
  addresses and the first 2,600 lines (about 8 chapters) of each of the 9 Gutenberg novels.
  Many documents of two genres and three centuries give next-sentence prediction something
  to learn that carries over to held-out documents.
* ``tests/fixtures/corpus/``: the much smaller slice the tests use (12 addresses, part of one novel).
"""

import gzip
import io
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "corpora"
SAMPLE, TESTS = ROOT / "data" / "sample", ROOT / "tests" / "fixtures" / "corpus"
TEST_YEARS = (1801, 1823, 1862, 1901, 1934, 1941, 1962, 1974, 1987, 1996, 2002, 2014)


def gzip_text(path: Path, text: str) -> None:
    """Reproducible bytes: fixed compression level, mtime 0, no file name in the header."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(text.encode("utf-8"))


def first_words(text: str, n: int) -> str:
    return " ".join(text.split(" ")[:n])


def main() -> None:
    rows = [json.loads(line) for line in gzip.open(SHARED / "sotu.jsonl.gz", "rt", encoding="utf-8")]
    books = sorted((SHARED / "gutenberg").glob("*.txt"))

    (SAMPLE / "gutenberg").mkdir(parents=True, exist_ok=True)
    gzip_text(SAMPLE / "sotu.jsonl.gz", "".join(
        json.dumps({"id": r["id"], "title": r["title"], "text": first_words(r["text"], 1500)}) + "\n" for r in rows))
    for book in books:
        lines = book.read_text(encoding="utf-8").split("\n")
        gzip_text(SAMPLE / "gutenberg" / f"{book.name}.gz", "\n".join(lines[:2600]) + "\n")

    TESTS.mkdir(parents=True, exist_ok=True)
    gz = gzip.GzipFile(TESTS / "sotu-sample.jsonl.gz", "wb", compresslevel=9, mtime=0)
    with io.TextIOWrapper(gz, encoding="utf-8") as f:
        for r in rows:
            if int(r["id"].split("-")[1]) in TEST_YEARS:
                f.write(json.dumps({"id": r["id"], "title": r["title"], "text": first_words(r["text"], 2200)}) + "\n")
    lines = (SHARED / "gutenberg" / "the-war-of-the-worlds.txt").read_text(encoding="utf-8").split("\n")
    (TESTS / "the-war-of-the-worlds-part.txt").write_text("\n".join(lines[:2600]) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
