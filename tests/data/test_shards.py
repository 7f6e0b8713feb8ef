"""Shards built from the sample corpus: statistics, layout, determinism, atomicity, readers."""

from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from bertpipe.core.fingerprint import sha256_file
from bertpipe.core.stagedir import is_complete
from bertpipe.data.masking import MaskingConfig, num_to_predict
from bertpipe.data.shards import ShardsConfig, build_shards
from bertpipe.data.wordpiece import load_vocab


@pytest.fixture(scope="module")
def static(sample_docs, sample_tok, tmp_path_factory):
    cfg = ShardsConfig(workers=1, block_chars=60_000, eval_fraction=0.1)
    return build_shards(sample_docs.path, sample_tok.path, cfg, tmp_path_factory.mktemp("shards"), progress=False)


def rows_of(result, split="train") -> list[dict]:
    return [r for s in result.manifest["shards"] if s["split"] == split for r in pq.read_table(result.path / s["file"]).to_pylist()]


def test_statistics_match_the_algorithm(static, sample_tok):
    v = load_vocab(sample_tok.path)
    rows = rows_of(static) + rows_of(static, "eval")
    m = static.manifest["counts"]
    assert len(rows) == m["rows"] > 2000
    # random next: one-sentence chunks always, others with probability 0.5
    n1 = m["single_sentence_chunks"]
    expected = (n1 + 0.5 * (len(rows) - n1)) / len(rows)
    observed = np.mean([r["next_sentence_label"] == 1 for r in rows])
    assert abs(observed - expected) <= 0.02, (observed, expected)
    kinds = {"mask": 0, "random": 0, "keep": 0}
    cfg = MaskingConfig()
    special = set(v.special_ids.tolist())
    for r in rows:
        ids, pos, orig = r["input_ids"], r["masked_positions"], r["masked_ids"]
        n = len(ids)
        assert n <= 128 and ids[0] == v.cls_id and ids[-1] == v.sep_id
        split = r["segment_split"]
        assert ids[split - 1] == v.sep_id and ids.count(v.sep_id) - sum(ids[p] == v.sep_id for p in pos) == 2
        candidates = sum(t not in special for t in ids) + sum(ids[p] in special for p in pos)
        assert len(pos) == min(int(num_to_predict(np.array([n]), cfg)[0]), candidates), "reference budget"
        assert pos == sorted(pos) and not (set(orig) & special), "special tokens are never masked"
        for p, o in zip(pos, orig):
            kinds["mask" if ids[p] == v.mask_id else "keep" if ids[p] == o else "random"] += 1
    total = sum(kinds.values())
    assert abs(sum(len(r["masked_positions"]) for r in rows) / sum(len(r["input_ids"]) for r in rows) - 0.15) < 0.01
    for k, want in zip(("mask", "random", "keep"), (0.8, 0.1, 0.1)):
        assert abs(kinds[k] / total - want) <= 0.015, kinds


def test_same_bytes_whatever_the_number_of_workers(sample_docs, sample_tok, static, tmp_path):
    cfg = ShardsConfig(workers=2, block_chars=60_000, eval_fraction=0.1)
    two = build_shards(sample_docs.path, sample_tok.path, cfg, tmp_path, progress=False)
    assert two.fingerprint == static.fingerprint and not two.cached
    files = sorted(p.name for p in static.path.glob("*.parquet"))
    assert len(files) >= 3 and files == sorted(p.name for p in two.path.glob("*.parquet"))
    for name in files:
        assert (static.path / name).read_bytes() == (two.path / name).read_bytes(), name


def test_manifest_checksums_and_third_party_readers(static):
    shards = static.manifest["shards"]
    for s in shards:
        f = static.path / s["file"]
        assert sha256_file(f) == s["sha256"]
        meta = pq.ParquetFile(f).metadata
        assert meta.num_rows == s["rows"] and meta.row_group(0).column(0).compression == "ZSTD"
    assert {s["split"] for s in shards} == {"train", "eval"}
    total = sum(s["rows"] for s in shards)
    assert pl.scan_parquet(str(static.path / "*.parquet")).select(pl.len()).collect().item() == total
    n, mean_len = duckdb.sql(f"select count(*), avg(len(input_ids)) from '{static.path}/*.parquet'").fetchall()[0]
    assert n == total and 20 < mean_len <= 128
    assert is_complete(static.path)
    assert json.loads((static.path / "manifest.json").read_text())["schema_version"] == 1


def test_cache_reuse_and_masking_change_rebuilds(sample_docs, sample_tok, static):
    root = static.path.parent
    same = build_shards(sample_docs.path, sample_tok.path, ShardsConfig(workers=2, block_chars=60_000, eval_fraction=0.1), root, progress=False)
    assert same.cached and same.path == static.path
    cfg = ShardsConfig(workers=1, block_chars=60_000, eval_fraction=0.1, masking=MaskingConfig(masked_lm_prob=0.4, max_predictions_per_seq=60))
    other = build_shards(sample_docs.path, sample_tok.path, cfg, root, progress=False)
    assert not other.cached and other.fingerprint != static.fingerprint
    assert abs(other.manifest["counts"]["masked"] / other.manifest["counts"]["tokens"] - 0.4) < 0.02


@pytest.mark.parametrize("mode", ["sop", "none"])
def test_dynamic_sop_and_full_sentence_modes(sample_docs, sample_tok, tmp_path, mode):
    v = load_vocab(sample_tok.path)
    cfg = ShardsConfig(workers=1, nsp_mode=mode, dynamic=True, dupe_factor=1, max_seq_length=64)
    res = build_shards(sample_docs.path, sample_tok.path, cfg, tmp_path, progress=False)
    rows = rows_of(res)
    assert set(pq.read_schema(res.path / res.manifest["shards"][0]["file"]).names) == {"input_ids", "segment_split", "next_sentence_label"}
    assert all(len(r["input_ids"]) <= 64 and r["input_ids"][0] == v.cls_id and r["input_ids"][-1] == v.sep_id for r in rows)
    assert not any(v.mask_id in r["input_ids"] for r in rows), "dynamic shards store unmasked ids"
    labels = np.array([r["next_sentence_label"] for r in rows])
    if mode == "none":
        assert (labels == -1).all() and all(r["segment_split"] == len(r["input_ids"]) for r in rows)
        assert np.mean([len(r["input_ids"]) for r in rows]) > 0.7 * 64, "full sentences pack the sequence"
    else:
        assert abs((labels == 1).mean() - 0.5) < 0.05


def test_failed_runs_publish_nothing_and_debris_is_ignored(sample_docs, sample_tok, tmp_path):
    bad_tok = tmp_path / "tok"
    shutil.copytree(sample_tok.path, bad_tok)
    (bad_tok / "tokenizer.json").write_text("{not json")
    with pytest.raises(Exception):
        build_shards(sample_docs.path, bad_tok, ShardsConfig(workers=1), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() or not [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]
    cfg = ShardsConfig(workers=1, dupe_factor=1)
    fp = build_shards(sample_docs.path, sample_tok.path, cfg, tmp_path / "probe", progress=False).fingerprint
    debris = tmp_path / "out" / fp
    debris.mkdir(parents=True)
    (debris / "train-00000.parquet").write_bytes(b"half a shard")  # a crashed run without the marker
    res = build_shards(sample_docs.path, sample_tok.path, cfg, tmp_path / "out", progress=False)
    assert not res.cached and is_complete(res.path)
    assert pq.read_metadata(res.path / "train-00000.parquet").num_rows > 0


def test_unk_positions_are_predicted_as_in_the_reference_unless_excluded(tmp_path):
    """create_pretraining_data.py excludes only [CLS] and [SEP]: [UNK] is predicted too."""
    import numpy as np

    from bertpipe.data.ingest import IngestConfig, ingest
    from bertpipe.data.wordpiece import WordPieceConfig, load_vocab, train_wordpiece
    from tests.conftest import SAMPLE

    src = tmp_path / "src"
    src.mkdir()
    text = (SAMPLE / "the-war-of-the-worlds-part.txt").read_text()
    (src / "book.txt").write_text(text)
    (src / "greek.txt").write_text("\n\n".join(f"{s} \u03b1\u03b2\u03b3 \u2603 end." for s in text.split(". ")[:400]))
    docs = ingest([src], IngestConfig(workers=1), tmp_path / "docs")
    tok = train_wordpiece(docs.path, WordPieceConfig(vocab_size=900, limit_alphabet=40), tmp_path / "tok")
    unk = load_vocab(tok.path).unk_id

    def unk_predictions(res) -> tuple[int, int]:
        labels = np.concatenate([pq.read_table(res.path / s["file"], columns=["masked_ids"]).column(0).combine_chunks()
                                 .values.to_numpy() for s in res.manifest["shards"]])
        return int((labels == unk).sum()), len(labels)

    base = ShardsConfig(workers=1, dupe_factor=1, max_seq_length=64)
    default = build_shards(docs.path, tok.path, base, tmp_path / "shards", progress=False)
    excluded = build_shards(docs.path, tok.path, base.model_copy(update={"masking": base.masking.model_copy(
        update={"mask_unk": False})}), tmp_path / "shards", progress=False)
    (n_unk, n), (n_unk_excl, _) = unk_predictions(default), unk_predictions(excluded)
    assert n_unk >= 5 and n_unk_excl == 0, (n_unk, n)  # before: 0 of 10,492 with the defaults
    assert default.fingerprint != excluded.fingerprint
    assert "mask_unk" not in default.manifest["config"]["masking"]  # the default keeps earlier shards' names


def test_token_packing_fills_rows_and_keeps_default_names(sample_docs, sample_tok, tmp_path):
    base = ShardsConfig(workers=1, dupe_factor=1, max_seq_length=37, nsp_mode="none", dynamic=True)
    packed = build_shards(sample_docs.path, sample_tok.path, base.model_copy(update={"pack": "tokens"}), tmp_path / "s", progress=False)
    lengths = [len(r["input_ids"]) for r in rows_of(packed)]
    assert lengths.count(37) >= len(lengths) - 1 and len(lengths) > 10  # one partial window per block at most
    sentences = ShardsConfig(workers=1, dupe_factor=1, max_seq_length=37, nsp_mode="none", dynamic=True)
    assert "pack" not in sentences.fingerprint_fields() and packed.fingerprint != build_shards(
        sample_docs.path, sample_tok.path, sentences, tmp_path / "s", progress=False).fingerprint
    with pytest.raises(ValueError, match="pack 'tokens' needs nsp_mode 'none'"):
        ShardsConfig(pack="tokens")
