"""The pretraining loop: learning, exact resume, bad input, MLM-only and left-to-right runs, HF export."""

from __future__ import annotations

import json

import pytest
import torch

from bertpipe.data.loader import ShardDataset
from bertpipe.model import hf
from bertpipe.train import loop as pretrain_mod
from bertpipe.train.loop import pretrain
from tests.train.conftest import TINY, build_shards, records, tiny_cfg


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def test_loss_falls_and_export_matches_transformers(static_dir, tmp_path):
    seen = []
    res = pretrain(static_dir, tiny_cfg(steps=80, eval_every=40, log_every=10), tmp_path / "run", on_metrics=seen.append)
    losses = [res.losses[s] for s in range(1, 81)]
    assert mean(losses[-10:]) < mean(losses[:5]) - 0.5, losses  # ~0.9 here: the unigram statistics
    train, evals = records(tmp_path / "run"), records(tmp_path / "run", "eval")
    assert [r["step"] for r in train] == list(range(10, 81, 10)) and [r["step"] for r in evals] == [0, 40, 80]
    assert evals[-1]["loss"] < mean(losses[:3]) - 0.5 and evals[-1]["mlm_acc"] > 0.02
    assert seen[0]["event"] == "start" and [r for r in seen if r.get("split") == "train"] == train
    for r in train:
        assert r["tokens_per_s"] > 0 and 0 <= r["mlm_acc"] <= 1 and 0 <= r["nsp_acc"] <= 1 and r["lr"] > 0
        assert r["loss"] == pytest.approx(r["mlm_loss"] + r["nsp_loss"])
    assert res.final_dir == tmp_path / "run" / "final" and not res.interrupted

    transformers = pytest.importorskip("transformers")
    ours = hf.load_checkpoint(res.final_dir).eval()
    hf.export_hf(res.final_dir, tmp_path / "hf")
    theirs = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    ds = ShardDataset(static_dir, batch_size=32, epochs=1, shuffle=False)
    b = next(b for b in ds if (b["attention_mask"] == 0).any())  # a padded batch
    with torch.no_grad():
        o = ours(b["input_ids"], b["token_type_ids"], b["attention_mask"], b["masked_positions"])
        t = theirs(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"])
    idx = b["masked_positions"][..., None].expand(-1, -1, t.prediction_logits.shape[-1])
    assert (torch.gather(t.prediction_logits, 1, idx) - o.mlm_logits).abs().max() < 1e-5
    assert (t.seq_relationship_logits - o.nsp_logits).abs().max() < 1e-5


def test_resume_reproduces_losses_bit_exactly(dynamic_dir, shard_root, tmp_path):
    """Dropout on, dynamic masks, grad accumulation, two phases: stop twice, resume, compare."""
    phase2 = build_shards(shard_root, dynamic=True, max_seq_length=96)
    cfg = tiny_cfg(steps=12, grad_accum=2, phase2_fraction=0.25, checkpoint_every=4, eval_every=6)
    full = pretrain(dynamic_dir, cfg, tmp_path / "a", shards_phase2=phase2)
    assert sorted(full.losses) == list(range(1, 13))
    part1 = pretrain(dynamic_dir, cfg, tmp_path / "b", shards_phase2=phase2, stop_at_step=5)
    assert part1.interrupted and part1.step == 5 and part1.final_dir is None
    assert (tmp_path / "b" / "checkpoints" / "step-0000005" / "trainer.pt").exists()
    part2 = pretrain(dynamic_dir, cfg, tmp_path / "b", shards_phase2=phase2, stop_at_step=10)  # stops in phase 2
    part3 = pretrain(dynamic_dir, cfg, tmp_path / "b", shards_phase2=phase2)
    assert sorted(part2.losses) == list(range(6, 11)) and sorted(part3.losses) == [11, 12]
    resumed = {**part1.losses, **part2.losses, **part3.losses}
    assert resumed == full.losses  # float equality: bit-exact
    assert [r["step"] for r in records(tmp_path / "b")] == list(range(1, 13))  # no duplicated records
    a, b = hf.load_state_dict(full.final_dir), hf.load_state_dict(part3.final_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    names = lambda run: sorted(p.name for p in (tmp_path / run / "checkpoints").iterdir())  # noqa: E731
    assert names("b") == names("a") == ["step-0000008", "step-0000012"]  # the stops' checkpoints went as newer ones came
    with pytest.raises(ValueError, match="different config"):
        pretrain(dynamic_dir, tiny_cfg(steps=14, grad_accum=2), tmp_path / "b")


def test_bad_input_stops_clearly(static_dir, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="vocabulary of 1000 tokens but the model's vocab_size is 500"):
        pretrain(static_dir, tiny_cfg(model={**TINY, "vocab_size": 500}), tmp_path / "v")
    with pytest.raises(ValueError, match="max_seq_length 64 exceeds the model's max_position_embeddings 32"):
        pretrain(static_dir, tiny_cfg(model={**TINY, "max_position_embeddings": 32}), tmp_path / "p")
    with pytest.raises(ValueError, match="sum"):
        tiny_cfg(masking={"mask_split": (0.5, 0.1, 0.1)})
    with pytest.raises(ValueError, match="dynamic=True"):
        pretrain(static_dir, tiny_cfg(masking={"masked_lm_prob": 0.3}), tmp_path / "m")

    real_loss, calls = pretrain_mod.pretraining_loss, []

    def poisoned(*args, **kw):  # the 7th step's loss is NaN
        out = real_loss(*args, **kw)
        calls.append(1)
        return out._replace(loss=out.loss * float("nan")) if len(calls) == 7 else out

    monkeypatch.setattr(pretrain_mod, "pretraining_loss", poisoned)
    run = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match=r"step 7: loss is nan.*step-0000006"):
        pretrain(static_dir, tiny_cfg(checkpoint_every=3), run)
    assert sorted(p.name for p in (run / "checkpoints").glob("*")) == ["step-0000003", "step-0000006"]
    assert all(torch.isfinite(t).all() for t in hf.load_state_dict(run / "checkpoints" / "step-0000006" / "model").values())


def test_no_nsp_shards_train_mlm_only(shard_root, tmp_path):
    shards = build_shards(shard_root, nsp_mode="none")
    res = pretrain(shards, tiny_cfg(steps=4, eval_every=4, precision="bf16"), tmp_path / "run")
    for r in records(tmp_path / "run") + records(tmp_path / "run", "eval"):
        assert r["nsp_acc"] is None and r["nsp_loss"] is None and r["loss"] == r["mlm_loss"]
    assert len(res.losses) == 4


def test_ltr_targets_restore_the_text_and_shift():
    ids = torch.tensor([[2, 9, 4, 9, 3, 0], [2, 5, 6, 3, 0, 0]])  # 9 = [MASK]
    mask = (ids != 0).long()
    positions = torch.tensor([[1, 3], [2, 0]])
    labels = torch.tensor([[7, 8], [6, -100]])  # row 1: one real slot, one padding slot at position 0
    full, targets = pretrain_mod.ltr_targets(ids, mask, positions, labels)
    assert full.tolist() == [[2, 7, 4, 8, 3, 0], [2, 5, 6, 3, 0, 0]]
    assert targets.tolist() == [[7, 4, 8, 3, -100], [5, 6, 3, -100, -100]]


def test_causal_model_trains_left_to_right_without_nsp(static_dir, tmp_path):
    res = pretrain(static_dir, tiny_cfg(steps=40, eval_every=40, model={**TINY, "causal": True}), tmp_path / "run")
    losses = [res.losses[s] for s in range(1, 41)]
    assert mean(losses[-5:]) < mean(losses[:3]) - 0.5, losses
    train, evals = records(tmp_path / "run"), records(tmp_path / "run", "eval")
    assert all(r["nsp_loss"] is None and r["loss"] == r["mlm_loss"] for r in train + evals)
    # next-token prediction scores every real token but the first, not only the ~15% masked slots
    ds = ShardDataset(static_dir, "eval", batch_size=16, epochs=1, shuffle=False)
    real_tokens = sum(int(b["attention_mask"].sum()) - len(b["attention_mask"]) for _, b in zip(range(4), ds))
    assert evals[-1]["predictions"] == real_tokens
    assert hf.load_config(res.final_dir).causal


def test_shards_of_another_vocabulary_or_another_run_are_refused(shard_root, static_dir, tmp_path):
    """Phase-2 shards written with another tokenizer (smaller, so the size check alone passed), and a
    resume on other shards, would train on ids that mean other tokens: both stop, naming both."""
    from bertpipe.data.ingest import IngestConfig, ingest
    from bertpipe.data.shards import ShardsConfig, build_shards
    from bertpipe.data.wordpiece import WordPieceConfig, train_wordpiece
    from tests.conftest import SAMPLE_FILES

    docs = ingest(SAMPLE_FILES, IngestConfig(workers=1), shard_root / "docs")
    small = train_wordpiece(docs.path, WordPieceConfig(vocab_size=700), tmp_path / "tok")
    other = build_shards(docs.path, small.path, ShardsConfig(workers=1, max_seq_length=64, dupe_factor=1, eval_fraction=0.1,
                                                              rows_per_group=64), tmp_path / "shards", progress=False)
    with pytest.raises(ValueError, match=rf"phase-2 shards {other.path} were made with the tokenizer {small.fingerprint}.*"
                                         rf"phase-1 shards {static_dir} with"):
        pretrain(static_dir, tiny_cfg(), tmp_path / "mixed", shards_phase2=other.path)

    tokenizer = json.loads((static_dir / "manifest.json").read_text())["tokenizer_dir"]
    same_vocab = build_shards(docs.path, tokenizer,
                              ShardsConfig(workers=1, max_seq_length=64, dupe_factor=1, eval_fraction=0.1, seed=99,
                                           rows_per_group=64), tmp_path / "shards2", progress=False)
    pretrain(static_dir, tiny_cfg(steps=6, checkpoint_every=2), tmp_path / "run", stop_at_step=2)
    with pytest.raises(ValueError, match=r"was trained on the shards .* this run reads"):
        pretrain(same_vocab.path, tiny_cfg(steps=6, checkpoint_every=2), tmp_path / "run")
