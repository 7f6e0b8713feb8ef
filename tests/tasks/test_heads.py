"""Task heads: shapes with odd sizes, frozen features really frozen, encoder weights load."""

from __future__ import annotations

import pytest
import torch

from bertpipe.model.bert import BertConfig, BertForPreTraining
from bertpipe.tasks.heads import (
    BiLSTMTagger,
    MLPClassifier,
    SequenceClassifier,
    SpanExtractor,
    TokenTagger,
    load_encoder,
    pool,
)

CFG = BertConfig(vocab_size=101, hidden_size=36, num_hidden_layers=3, num_attention_heads=3, intermediate_size=52)


def batch(b=5, t=17):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 101, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, 11:] = 0
    return ids, torch.zeros_like(ids), mask


def test_shapes():
    ids, types, mask = batch()
    assert SequenceClassifier(CFG, 3)(ids, types, mask).shape == (5, 3)
    start, end = SpanExtractor(CFG)(ids, types, mask)
    assert start.shape == end.shape == (5, 17) and (start[0, 11:] < -1e3).all()
    assert TokenTagger(CFG, 7)(ids, types, mask).shape == (5, 17, 7)


@pytest.mark.parametrize("features", ["embeddings", "last", "second_to_last", "sum_last4", "concat_last4", "sum_all"])
def test_feature_based_heads_train_only_the_head(features):
    ids, types, mask = batch()
    tagger = BiLSTMTagger(CFG, 7, features, hidden=8)
    out = tagger(ids, types, mask)
    assert out.shape == (5, 17, 7)
    out.sum().backward()
    assert all(p.grad is None for p in tagger.encoder.bert.parameters()), "the encoder stays frozen"
    assert tagger.classifier.weight.grad is not None
    if tagger.encoder.mix is not None:
        assert tagger.encoder.mix.grad is not None, "layer weights are learned"
    assert MLPClassifier(CFG, 2, features, hidden=8)(ids, types, mask).shape == (5, 2)


def test_pooling_ignores_padding():
    h = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(pool(h, mask, "cls"), h[:, 0])
    assert torch.allclose(pool(h, mask, "mean")[0], h[0, :3].mean(0))
    assert torch.allclose(pool(h, mask, "mean")[1], h[1].mean(0))
    h[0, 3:] = 100.0  # padding states must not win the max
    assert torch.equal(pool(h, mask, "max")[0], h[0, :3].amax(0))


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pooled_classifiers_do_not_see_padding(pooling):
    ids, types, mask = batch()
    model = SequenceClassifier(CFG, 3, pooling=pooling).eval()
    frozen = MLPClassifier(CFG, 3, "last", hidden=8, pooling=pooling).eval()
    for m in (model, frozen):
        a = m(ids, types, mask)[0]
        ids2 = ids.clone()
        ids2[0, 11:] = 7  # change only padded positions of row 0
        assert torch.allclose(a, m(ids2, types, mask)[0], atol=1e-6)


def test_pretrained_encoder_weights_load_into_every_head():
    pre = BertForPreTraining(CFG)
    state = pre.state_dict()
    for model in (SequenceClassifier(CFG, 2), SpanExtractor(CFG), TokenTagger(CFG, 3), BiLSTMTagger(CFG, 3, "last", 8)):
        load_encoder(model, state)
        bert = model.encoder.bert if hasattr(model, "encoder") else model.bert
        assert torch.equal(bert.embeddings.word_embeddings.weight, pre.bert.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="lacks encoder weights"):
        load_encoder(SequenceClassifier(CFG, 2), {"bert.pooler.dense.weight": state["bert.pooler.dense.weight"]})


def test_bilstm_real_tokens_ignore_padding_and_see_both_directions():
    ids, types, mask = batch()
    tagger = BiLSTMTagger(CFG, 4, "last", hidden=8).eval()
    out = tagger(ids, types, mask)
    ids2 = ids.clone()
    ids2[0, 11:] = 9  # only row 0's padding changes: its real positions must not move
    assert torch.allclose(out[0, :11], tagger(ids2, types, mask)[0, :11], atol=1e-6)
    ids3 = ids.clone()
    ids3[0, 10] = 9  # the last real token changes: the first position hears it (backward direction)
    assert not torch.allclose(out[0, 0], tagger(ids3, types, mask)[0, 0])
    ids4 = ids.clone()
    ids4[0, 0] = 9  # the first token changes: the last real position hears it (forward direction)
    assert not torch.allclose(out[0, 10], tagger(ids4, types, mask)[0, 10])


def test_causal_classifier_reads_the_last_real_token():
    ids, types, mask = batch()
    causal = CFG.model_copy(update={"causal": True})
    model = SequenceClassifier(causal, 3).eval()
    out = model(ids, types, mask)
    ids2 = ids.clone()
    ids2[0, 10] = 9  # row 0's last real token: a left-to-right [CLS] could never see it
    assert not torch.allclose(out[0], model(ids2, types, mask)[0])
    ids3 = ids.clone()
    ids3[0, 12] = 9  # padding after it changes nothing
    assert torch.allclose(out[0], model(ids3, types, mask)[0], atol=1e-6)
