"""Source mixtures: two real sources of unequal size at target shares 3:1 get their training
tokens within 2% of the targets, held-out documents stay out of training, and the bytes do
not depend on the worker count."""

from __future__ import annotations

import pytest

from bertpipe.data.ingest import IngestConfig, ingest
from bertpipe.data.mixture import SourceShare
from bertpipe.data.shards import ShardsConfig, _vocab, build_shards, plan_blocks
from bertpipe.data.wordpiece import WordPieceConfig, train_wordpiece
from tests.conftest import ROOT

MIX = [SourceShare(name="books", files=["*.txt.gz"], weight=3), SourceShare(name="speeches", files=["*.jsonl.gz"], weight=1)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    sample = ROOT / "data" / "sample"
    docs = ingest([sample / "gutenberg", sample / "sotu.jsonl.gz"], IngestConfig(workers=1), root / "docs")  # 9 books, 233 speeches
    tok = train_wordpiece(docs.path, WordPieceConfig(vocab_size=2000), root / "tok")
    return root, docs, tok


def test_token_shares_reach_their_targets(corpus):
    root, docs, tok = corpus
    base = ShardsConfig(workers=1, dupe_factor=1, max_seq_length=64, eval_fraction=0.1, block_chars=500_000)
    plain = build_shards(docs.path, tok.path, base.model_copy(update={"sources": [s.model_copy(update={"weight": 1})
                                                                                  for s in MIX]}), root / "s")
    natural = {s["name"]: s["share"] for s in plain.manifest["sources"]}
    assert natural["speeches"] > 0.5, natural  # the larger source, to be cut to a quarter
    mixed = build_shards(docs.path, tok.path, base.model_copy(update={"sources": MIX}), root / "s")
    got = {s["name"]: s for s in mixed.manifest["sources"]}
    for name, target in (("books", 0.75), ("speeches", 0.25)):
        assert got[name]["target_share"] == target
        assert abs(got[name]["share"] - target) <= 0.02 * target, got  # within 2% of the target
    train_tokens = sum(s["train_tokens"] for s in got.values())
    assert abs(train_tokens / sum(s["train_tokens"] for s in plain.manifest["sources"]) - 1) < 0.05  # the total stays
    assert "sources" not in base.fingerprint_fields()


def test_held_out_documents_never_reach_training_and_workers_change_nothing(corpus):
    root, docs, tok = corpus
    cfg = ShardsConfig(workers=1, dupe_factor=1, max_seq_length=64, eval_fraction=0.1, block_chars=500_000, sources=MIX)
    blocks = plan_blocks(docs.path, cfg, _vocab(str(tok.path), True))
    rows = {split: {(p, r) for s, pieces, _ in blocks if s == split for p, rs in pieces for r in rs} for split in ("train", "eval")}
    assert rows["eval"] and rows["train"] and not rows["eval"] & rows["train"]
    repeated = [r for s, pieces, _ in blocks if s == "train" for _, rs in pieces for r in rs]
    assert len(repeated) > len(set(repeated)), "books up-sampled: some training documents twice"
    one = build_shards(docs.path, tok.path, cfg, root / "w1")
    two = build_shards(docs.path, tok.path, cfg.model_copy(update={"workers": 2}), root / "w2")
    assert [s["sha256"] for s in one.manifest["shards"]] == [s["sha256"] for s in two.manifest["shards"]]


def test_a_file_of_no_source_is_named():
    with pytest.raises(ValueError, match="belong to no source"):
        from bertpipe.data.mixture import source_of

        source_of("notes.txt", MIX)
