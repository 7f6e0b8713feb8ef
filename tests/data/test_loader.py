"""ShardDataset: batch layout, partitioning across ranks and workers, seeding, resumption."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from bertpipe.data.loader import ShardDataset, load_shards_manifest
from bertpipe.data.masking import MaskingConfig
from tests.conftest import SAMPLE_FILES


def build_tiny_shards(root: Path, *, dynamic: bool, nsp_mode: str = "nsp", max_seq_length: int = 64) -> Path:
    """Real pipeline (ingest -> WordPiece 1000 -> shards, 64-row groups) on the tests' corpus."""
    from bertpipe.data.ingest import IngestConfig, ingest
    from bertpipe.data.shards import ShardsConfig, build_shards
    from bertpipe.data.wordpiece import WordPieceConfig, train_wordpiece

    docs = ingest(SAMPLE_FILES, IngestConfig(workers=1), root / "docs")
    tok = train_wordpiece(docs.path, WordPieceConfig(vocab_size=1000), root / "tok")
    cfg = ShardsConfig(workers=1, max_seq_length=max_seq_length, dupe_factor=2, eval_fraction=0.1,
                       block_chars=50_000, rows_per_group=64, dynamic=dynamic, nsp_mode=nsp_mode,
                       masking=MaskingConfig(max_predictions_per_seq=max(10, max_seq_length // 6)))
    name = f"shards-{'dyn' if dynamic else 'static'}-{nsp_mode}-{max_seq_length}"
    return build_shards(docs.path, tok.path, cfg, root / name, progress=False).path


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory) -> Path:
    return build_tiny_shards(tmp_path_factory.mktemp("data"), dynamic=False)


@pytest.fixture(scope="module")
def dynamic_dir(tmp_path_factory) -> Path:
    return build_tiny_shards(tmp_path_factory.mktemp("data"), dynamic=True)


def split_rows(path: Path, split: str) -> dict[int, dict]:
    """row_id -> stored row, read with pyarrow (independently of ShardDataset)."""
    _, manifest = load_shards_manifest(path)
    files = sorted(s["file"] for s in manifest["shards"] if s["split"] == split)
    return {(fi << 32) + r: row for fi, f in enumerate(files)
            for r, row in enumerate(pq.read_table(path / f).to_pylist())}


def collect_ids(batches) -> list[int]:
    return [i for b in batches for i in b["row_id"].tolist()]


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_batch_layout(kind, static_dir, dynamic_dir):
    path = static_dir if kind == "static" else dynamic_dir
    ds = ShardDataset(path, batch_size=8, seed=1, epochs=1)
    rows = split_rows(path, "train")
    batch = next(iter(ds))
    B, T = batch["input_ids"].shape
    assert B == 8 and T <= 64 and batch["masked_positions"].shape == (8, 10)
    for k, v in batch.items():
        assert v.dtype == torch.int64, k
    assert batch["next_sentence_label"].shape == (8,)
    for i, rid in enumerate(batch["row_id"].tolist()):
        row = rows[rid]
        n, split = len(row["input_ids"]), row["segment_split"]
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (T - n)
        assert batch["token_type_ids"][i].tolist() == [0] * split + [1] * (n - split) + [0] * (T - n)
        assert (batch["input_ids"][i, n:] == 0).all()  # [PAD]
        assert batch["next_sentence_label"][i].item() == row["next_sentence_label"]
        labels, pos = batch["masked_lm_labels"][i], batch["masked_positions"][i]
        k = int((labels != -100).sum())
        assert (labels[k:] == -100).all() and (pos[k:] == 0).all()
        if kind == "static":  # the stored mask, unchanged
            assert batch["input_ids"][i, :n].tolist() == row["input_ids"]
            assert pos[:k].tolist() == row["masked_positions"] and labels[:k].tolist() == row["masked_ids"]
        else:  # masked here: labels are the original ids at the positions
            assert k >= 1 and labels[:k].tolist() == [row["input_ids"][p] for p in pos[:k].tolist()]
    assert max(len(r["input_ids"]) for r in (rows[j] for j in batch["row_id"].tolist())) == T
    fixed = next(iter(ShardDataset(path, batch_size=4, pad_to="max", epochs=1)))
    assert fixed["input_ids"].shape == (4, 64)


def test_ranks_and_workers_partition_every_row_once(static_dir):
    for split, n_ranks in (("train", 2), ("eval", 3)):  # eval: 4 row groups < 6 readers -> row striding
        ids: list[int] = []
        for rank in range(n_ranks):
            ds = ShardDataset(static_dir, split, batch_size=16, seed=3, epochs=1, rank=rank, world_size=n_ranks,
                              shuffle_buffer=50)
            part = collect_ids(DataLoader(ds, batch_size=None, num_workers=2))
            assert part, (split, rank)
            ids += part
        expected = set(split_rows(static_dir, split))
        assert len(ids) == len(set(ids)) == len(expected) and set(ids) == expected
    with pytest.raises(ValueError, match="too few"):  # an endless stream would starve a reader
        next(iter(ShardDataset(static_dir, "eval", batch_size=4, rank=299, world_size=300)))


def test_seeded_order_and_masks(static_dir, dynamic_dir):
    def run(path, seed, epoch):
        return list(ShardDataset(path, batch_size=32, seed=seed, epoch=epoch, epochs=1, shuffle_buffer=200))

    a, b = run(static_dir, 5, 0), run(static_dir, 5, 0)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    assert collect_ids(a) != collect_ids(run(static_dir, 5, 1)) != collect_ids(run(static_dir, 6, 0))

    def masks(batches):
        return {r: (x["masked_positions"][i].tolist(), x["input_ids"][i].tolist())
                for x in batches for i, r in enumerate(x["row_id"].tolist())}

    s0, s1 = masks(run(static_dir, 5, 0)), masks(run(static_dir, 5, 1))
    assert s0 == s1  # static: the stored mask every epoch
    d0, d1 = masks(run(dynamic_dir, 5, 0)), masks(run(dynamic_dir, 5, 1))
    assert d0.keys() == d1.keys()
    changed = sum(d0[r] != d1[r] for r in d0)
    assert changed > 0.9 * len(d0)  # dynamic: a fresh mask per epoch
    assert masks(run(dynamic_dir, 5, 0)) == d0  # ... and a reproducible one


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_batches_resumes_exactly_across_epochs(dynamic_dir, workers):
    def stream(skip, n):
        ds = ShardDataset(dynamic_dir, batch_size=64, seed=9, shuffle_buffer=300, skip_batches=skip)
        it = iter(DataLoader(ds, batch_size=None, num_workers=workers))
        return [next(it) for _ in range(n)]

    full = stream(0, 90)  # ~37 batches per epoch (of all workers together): spans three epochs
    if workers == 0:
        assert len(set(collect_ids(full[:37]))) == 37 * 64
    for skip in (1, 45, 77):
        tail = stream(skip, 90 - skip)
        assert all(torch.equal(x[k], y[k]) for x, y in zip(full[skip:], tail) for k in x)


def test_masking_override_only_for_dynamic(static_dir, dynamic_dir):
    with pytest.raises(ValueError, match="dynamic"):
        ShardDataset(static_dir, batch_size=4, masking=MaskingConfig(masked_lm_prob=0.3))
    ds = ShardDataset(dynamic_dir, batch_size=64, epochs=1, masking=MaskingConfig(masked_lm_prob=0.4,
                                                                                   max_predictions_per_seq=30))
    b = next(iter(ds))
    assert b["masked_positions"].shape[1] == 30
    rate = (b["masked_lm_labels"] != -100).sum() / b["attention_mask"].sum()
    assert 0.35 < rate < 0.45


def test_shards_readable_by_polars_pyarrow_duckdb(static_dir):
    import duckdb
    import polars as pl

    _, manifest = load_shards_manifest(static_dir)
    n = sum(s["rows"] for s in manifest["shards"] if s["split"] == "train")
    glob = str(static_dir / "train-*.parquet")
    assert pl.scan_parquet(glob).select(pl.len()).collect().item() == n
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in static_dir.glob("train-*.parquet")) == n
    con = duckdb.connect()
    got = con.execute(f"select count(*), max(len(input_ids)), sum(len(masked_ids)) from read_parquet('{glob}')").fetchone()
    assert got[0] == n and got[1] == 64
    assert got[2] == sum(s["masked"] for s in manifest["shards"] if s["split"] == "train")
    ds = ShardDataset(static_dir, batch_size=100, epochs=1, shuffle=False)
    assert sum(int(b["attention_mask"].sum()) for b in ds) == con.execute(
        f"select sum(len(input_ids)) from read_parquet('{glob}')").fetchone()[0]


def global_steps(path: Path, *, world: int, batch: int, accum: int, workers: int = 0, steps: int, skip_steps: int = 0):
    """Per optimizer step: {row_id: (input_ids, masked positions, labels)} over every rank's micro-batches."""
    its = [iter(DataLoader(ShardDataset(path, batch_size=batch, accum=accum, seed=4, shuffle_buffer=150, rank=r,
                                        world_size=world, skip_batches=skip_steps * accum), batch_size=None,
                           num_workers=workers)) for r in range(world)]
    out = []
    for _ in range(steps):
        step = {}
        for it in its:
            for _ in range(accum):
                b = next(it)
                assert b["global_rows"].item() == world * accum * batch
                for i, rid in enumerate(b["row_id"].tolist()):
                    n = int(b["attention_mask"][i].sum())
                    step[rid] = (b["input_ids"][i, :n].tolist(), b["masked_positions"][i].tolist(),
                                 b["masked_lm_labels"][i].tolist())
        out.append(step)
    return out


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_one_sample_order_for_any_split_of_the_global_batch(kind, static_dir, dynamic_dir):
    path = static_dir if kind == "static" else dynamic_dir
    ref = global_steps(path, world=2, batch=4, accum=1, steps=60)  # 60 x 8 rows: more than an epoch (>1 window)
    assert all(len(s) == 8 for s in ref) and len({r for s in ref for r in s}) > 300
    assert global_steps(path, world=1, batch=4, accum=2, steps=60) == ref
    assert global_steps(path, world=1, batch=4, accum=2, workers=2, steps=60) == ref
    assert global_steps(path, world=1, batch=8, accum=1, steps=60) == ref
    assert global_steps(path, world=4, batch=1, accum=2, steps=60) == ref
    assert global_steps(path, world=1, batch=4, accum=2, steps=40, skip_steps=20) == ref[20:]  # resumed on another split
    assert global_steps(path, world=2, batch=8, accum=1, steps=30) != ref[:30]  # another global batch: another order
