"""Shape, masking, parameter-count and head tests for bertpipe.model.bert (CPU, seconds)."""

import pytest
import torch

from bertpipe.model.bert import (
    PRESETS,
    BertConfig,
    BertForPreTraining,
    BertModel,
    pretraining_loss,
)

V, T, B = 101, 17, 3


def odd_config(**kw) -> BertConfig:
    # Deliberately odd sizes so a wrong view/transpose cannot hide behind a square shape.
    return BertConfig(vocab_size=V, hidden_size=36, num_hidden_layers=3, num_attention_heads=3,
                      intermediate_size=50, max_position_embeddings=T + 3, **kw)


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T), generator=g)
    types = torch.zeros_like(ids)
    types[:, 9:] = 1
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0  # right padding on one row
    mask[2, 5:] = 0
    ids[mask == 0] = 0
    return ids, types, mask


@pytest.mark.parametrize("fusion", ["sum", "concat"])
@pytest.mark.parametrize("causal", [False, True])
def test_shapes(fusion, causal):
    torch.manual_seed(0)
    cfg = odd_config(embedding_fusion=fusion, causal=causal)
    model = BertForPreTraining(cfg).eval()
    ids, types, mask = batch()
    positions = torch.tensor([[1, 4, 7, 0], [2, 3, 0, 0], [1, 2, 3, 4]])
    out = model(ids, types, mask, masked_positions=positions, output_hidden_states=True)
    assert out.mlm_logits.shape == (B, 4, V)
    assert out.nsp_logits.shape == (B, 2)
    assert len(out.hidden_states) == cfg.num_hidden_layers + 1
    assert all(h.shape == (B, T, 36) for h in out.hidden_states)
    full = model(ids, types, mask)
    assert full.mlm_logits.shape == (B, T, V) and full.hidden_states is None
    enc = model.bert(ids)  # token types and mask optional
    assert enc.last_hidden_state.shape == (B, T, 36) and enc.pooled_output.shape == (B, 36)
    assert torch.isfinite(out.mlm_logits).all() and torch.isfinite(full.mlm_logits).all()
    if fusion == "concat":
        assert model.bert.embeddings.fusion.weight.shape == (36, 3 * 36)


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(vocab_size=10, hidden_size=36, num_hidden_layers=1, num_attention_heads=5,
                   intermediate_size=4)
    with pytest.raises(ValueError):
        BertConfig.from_preset("tiny", hiden_size=3)  # typo'd field is rejected
    cfg = BertConfig.from_preset("mini", vocab_size=8000)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (4, 256, 4)
    assert cfg.intermediate_size == 1024 and cfg.vocab_size == 8000
    assert set(PRESETS) == {"tiny", "mini", "small", "medium", "base", "large"}
    with pytest.raises(ValueError, match="unknown preset"):
        BertConfig.from_preset("huge")


@pytest.mark.parametrize("causal", [False, True])
def test_padding_is_masked(causal):
    torch.manual_seed(0)
    model = BertModel(odd_config(causal=causal)).eval()
    ids, types, mask = batch()
    other = ids.clone()
    other[mask == 0] = torch.randint(1, V, (int((mask == 0).sum()),))  # change only padding
    other_types = types.clone()
    other_types[mask == 0] = 0
    with torch.no_grad():
        a = model(ids, types, mask).last_hidden_state
        b = model(other, other_types, mask).last_hidden_state
    real = mask.bool()
    assert (a[~real] - b[~real]).abs().max() > 1e-3  # padded positions did change...
    torch.testing.assert_close(a[real], b[real], rtol=0, atol=1e-6)  # ...real ones did not


def test_an_eval_model_gives_the_same_outputs_with_or_without_gradients():
    """Only training skips the padding; evaluation computes every position as HF does, whether or
    not gradients are on (a registered model predicts under no_grad, a user may not)."""
    torch.manual_seed(0)
    model = BertModel(odd_config()).eval()
    ids, types, mask = batch()
    assert (mask == 0).any()
    with torch.no_grad():
        a = model(ids, types, mask).last_hidden_state
    b = model(ids, types, mask).last_hidden_state
    torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("with_mask", [False, True])
def test_causal_mask(with_mask):
    torch.manual_seed(0)
    model = BertModel(odd_config(causal=True)).eval()
    ids, types, _ = batch()
    mask = torch.ones_like(ids) if with_mask else None
    later = ids.clone()
    later[:, 10:] = (later[:, 10:] + 7) % V
    with torch.no_grad():
        a = model(ids, types, mask).last_hidden_state
        b = model(later, types, mask).last_hidden_state
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=1e-6)
    assert (a[:, 10:] - b[:, 10:]).abs().max() > 1e-3
    # the bidirectional model does let later tokens change earlier outputs
    bidi = BertModel(odd_config()).eval()
    with torch.no_grad():
        assert (bidi(ids, types).last_hidden_state[:, :10]
                - bidi(later, types).last_hidden_state[:, :10]).abs().max() > 1e-3


@pytest.mark.parametrize(("name", "paper"), [("base", 110e6), ("large", 340e6)])
def test_parameter_counts_match_paper(name, paper):
    # Counted as the paper does: embeddings + encoder + pooler (BertModel). The MLM decoder is
    # the word-embedding matrix, so even with heads it is not counted twice.
    with torch.device("meta"):  # no memory, no init cost
        model = BertForPreTraining(BertConfig.from_preset(name))
    n = model.bert.num_parameters()
    assert abs(n - paper) / paper < 0.02, n
    heads = sum(p.numel() for p in model.cls.parameters())
    assert model.num_parameters() == n + heads  # no separate decoder weight
    assert "cls.predictions.decoder.weight" not in model.state_dict()


def test_masked_positions_equal_gathered_full_logits():
    torch.manual_seed(0)
    model = BertForPreTraining(odd_config()).eval()
    ids, types, mask = batch()
    positions = torch.tensor([[1, 4, 7, 16], [2, 3, 11, 0], [1, 2, 3, 4]])
    with torch.no_grad():
        part = model(ids, types, mask, masked_positions=positions)
        full = model(ids, types, mask)
    gathered = torch.gather(full.mlm_logits, 1, positions[..., None].expand(-1, -1, V))
    torch.testing.assert_close(part.mlm_logits, gathered, rtol=0, atol=1e-5)
    torch.testing.assert_close(part.nsp_logits, full.nsp_logits, rtol=0, atol=0)


def test_pretraining_loss():
    torch.manual_seed(0)
    model = BertForPreTraining(odd_config())
    ids, types, mask = batch()
    positions = torch.tensor([[1, 4, 7, 0], [2, 3, 0, 0], [1, 2, 3, 4]])
    out = model(ids, types, mask, masked_positions=positions)
    labels = torch.gather(ids, 1, positions)
    labels[0, 3] = labels[1, 2:] = -100  # padding slots of the prediction list
    labels[2, :2] = out.mlm_logits[2, :2].argmax(-1)  # two predictions right, so the accuracy is neither 0 nor 1
    nsp = torch.tensor([0, 1, 0])
    res = pretraining_loss(out.mlm_logits, out.nsp_logits, labels, nsp)
    real = labels != -100
    logp = out.mlm_logits.log_softmax(-1)
    expected_mlm = -logp[real].gather(1, labels[real][:, None]).mean()
    expected_nsp = torch.nn.functional.cross_entropy(out.nsp_logits, nsp)
    torch.testing.assert_close(res.mlm_loss, expected_mlm)
    torch.testing.assert_close(res.loss, expected_mlm + expected_nsp)
    right = [bool(out.mlm_logits[b, p].argmax() == labels[b, p]) for b, p in real.nonzero().tolist()]
    assert 0 < sum(right) < len(right) == 9
    assert res.mlm_accuracy.item() == pytest.approx(sum(right) / len(right))  # over the real slots only
    res.loss.backward()  # gradients flow to every parameter, the tied decoder included
    assert all(p.grad is not None for p in model.parameters())
    no_nsp = pretraining_loss(out.mlm_logits, out.nsp_logits, labels)
    assert no_nsp.nsp_loss is None
    torch.testing.assert_close(no_nsp.loss, expected_mlm)
    empty = pretraining_loss(out.mlm_logits, out.nsp_logits, torch.full_like(labels, -100))
    assert empty.mlm_loss.item() == 0.0


def test_init_like_hf():
    torch.manual_seed(0)
    cfg = BertConfig.from_preset("tiny", vocab_size=1000)
    model = BertForPreTraining(cfg)
    w = model.bert.encoder.layer[0].attention.self.query.weight
    assert abs(w.std().item() - 0.02) < 0.002
    assert model.bert.embeddings.word_embeddings.weight[cfg.pad_token_id].abs().sum() == 0
    assert (model.bert.embeddings.LayerNorm.weight == 1).all()
    assert (model.cls.predictions.bias == 0).all()
    assert (model.bert.pooler.dense.bias == 0).all()
