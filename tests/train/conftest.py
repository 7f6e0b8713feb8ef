"""Shards for the training tests: the real data stages on the tests' corpus, tiny odd-sized models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bertpipe.train.config import PretrainConfig
from bertpipe.train.optim import OptimConfig
from tests.conftest import SAMPLE_FILES

TINY = {"hidden_size": 36, "num_attention_heads": 3, "num_hidden_layers": 3, "intermediate_size": 72}
TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]


def build_shards(root: Path, *, dynamic: bool = False, nsp_mode: str = "nsp", max_seq_length: int = 64) -> Path:
    """Real pipeline (ingest -> WordPiece 1000 -> shards) on the tests' corpus (~300 kB)."""
    from bertpipe.data.ingest import IngestConfig, ingest
    from bertpipe.data.masking import MaskingConfig
    from bertpipe.data.shards import ShardsConfig
    from bertpipe.data.shards import build_shards as build
    from bertpipe.data.wordpiece import WordPieceConfig, train_wordpiece

    docs = ingest(SAMPLE_FILES, IngestConfig(workers=1), root / "docs")
    tok = train_wordpiece(docs.path, WordPieceConfig(vocab_size=1000), root / "tok")
    cfg = ShardsConfig(workers=1, max_seq_length=max_seq_length, dupe_factor=2, eval_fraction=0.1, block_chars=50_000,
                       rows_per_group=64, dynamic=dynamic, nsp_mode=nsp_mode,
                       masking=MaskingConfig(max_predictions_per_seq=max_seq_length // 6))
    return build(docs.path, tok.path, cfg, root / f"shards-{dynamic}-{nsp_mode}-{max_seq_length}", progress=False).path


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from 2 threads, and OpenMP threads crawl when other processes hold a core."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pretrain-data")


@pytest.fixture(scope="module")
def static_dir(shard_root) -> Path:
    return build_shards(shard_root)


@pytest.fixture(scope="module")
def dynamic_dir(shard_root) -> Path:
    return build_shards(shard_root, dynamic=True)


def tiny_cfg(**kw) -> PretrainConfig:
    base = dict(model=TINY, batch_size=16, steps=12, log_every=1, eval_every=0, eval_batches=4, checkpoint_every=0,
                seed=7, optim=OptimConfig(optimizer="adamw", lr=3e-3, warmup_ratio=0.1))
    return PretrainConfig(**{**base, **kw})


def records(run: Path, split: str = "train") -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("split") == split]


