"""The model's fast paths (bertpipe.model.kernels) against the plain computations they replace:
the same results within the precision they run in, the same random draws, bit-exact resume
(tests/train/test_loop.py) unchanged."""

import pytest
import torch
import torch.nn.functional as F

from bertpipe.model import kernels
from bertpipe.model.bert import BertConfig, BertForPreTraining, pretraining_loss
from bertpipe.model.kernels import Unpadded, attention, mlm_cross_entropy, use_plain_attention

# bf16 keeps 8 bits of mantissa: one rounding step is 2^-8 ~ 0.4% relative.
BF16 = {"rtol": 2e-2, "atol": 2e-2}


def qkv(B=3, A=2, T=19, d=8, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, A, T, d, generator=g).to(dtype).requires_grad_() for _ in range(3)]


def key_mask(B=3, T=19):
    mask = torch.ones(B, 1, 1, T, dtype=torch.bool)
    mask[1, ..., 11:] = False
    mask[2, ..., 4:] = False
    return mask


def test_plain_attention_is_used_only_for_cpu_training_in_reduced_precision_or_with_dropout():
    q, _, _ = qkv()
    assert use_plain_attention(q)
    assert not use_plain_attention(q.detach())  # inference: SDPA
    assert not use_plain_attention(q.float())  # fp32 without dropout: SDPA's fused kernel
    assert use_plain_attention(q.float(), dropout_p=0.1)  # with dropout SDPA would take its math path
    assert not use_plain_attention(qkv(T=kernels.PLAIN_MAX_LEN + 1)[0])  # long sequences: SDPA


@pytest.mark.parametrize("case", ["padding", "causal", "causal+padding", "none"])
def test_plain_attention_matches_sdpa_in_fp32_within_bf16_rounding(case):
    q, k, v = qkv()
    mask, is_causal = key_mask(), False
    if case == "causal":
        mask, is_causal = None, True
    elif case == "causal+padding":
        mask = mask & torch.ones(19, 19, dtype=torch.bool).tril()
    elif case == "none":
        mask = None
    y = attention(q, k, v, mask, is_causal, 0.0)
    assert y.dtype == torch.bfloat16
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q32, k32, v32, attn_mask=mask, is_causal=is_causal)
    torch.testing.assert_close(y.float(), ref, **BF16)  # every query sees a real key: no fully masked rows
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    (y.float() * g).sum().backward()
    (ref * g).sum().backward()
    for a, b in ((q, q32), (k, k32), (v, v32)):
        torch.testing.assert_close(a.grad.float(), b.grad, **BF16)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_keep_mask_drops_at_the_rate_independently_and_from_the_seeded_generator(p):
    torch.manual_seed(3)
    keep = kernels.keep_mask((301, 1003), p)  # odd sizes: the four lanes per word do not divide them
    assert keep.shape == (301, 1003) and keep.dtype == torch.bool
    n, dropped = keep.numel(), (~keep).double()
    assert abs(dropped.mean().item() - p) < 5 * (p * (1 - p) / n) ** 0.5  # 5 standard errors
    for lane in range(4):  # each 16-bit lane of a draw alone (a lane with a bit missing would drop nothing)
        rate = dropped.flatten()[lane::4].mean().item()
        assert abs(rate - p) < 5 * (p * (1 - p) / (n / 4)) ** 0.5, (lane, rate)
    # neighbours (the four lanes of one word, and the words after each other) are independent
    flat = dropped.flatten()
    for lag in (1, 2, 3, 4, 5):
        corr = torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1].item()
        assert abs(corr) < 5 / n**0.5, (lag, corr)
    torch.manual_seed(3)
    assert torch.equal(kernels.keep_mask((301, 1003), p), keep)  # seeded: resume draws the same masks
    assert not torch.equal(kernels.keep_mask((301, 1003), p), keep)  # and the stream moves on


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_keeps_the_expectation_exactly_in_any_dtype(dtype):
    mask = kernels.dropout_mask((200, 500), 0.1, dtype, torch.device("cpu"))
    assert mask.scale == 65536 / (65536 - 6554)  # 1 / (1 - rate), rate 6554/65536
    assert set(mask.keep.unique().tolist()) == {0.0, 1.0} and mask.keep.dtype == dtype
    x = torch.linspace(0.5, 2.0, 200 * 500).view(200, 500).to(dtype).requires_grad_()
    y = kernels.apply_dropout(x, mask)
    once = (x.detach().float() * mask.keep.float() * mask.scale).to(dtype)  # fp32 arithmetic, rounded once to dtype
    assert torch.equal(y, once)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, (mask.keep.float() * mask.scale).to(dtype))
    kept = mask.keep != 0
    assert abs((y[kept].double() / x[kept].double()).mean().item() - mask.scale) < 1e-4  # bf16: 1.111, not 1.109


def test_the_plain_attention_applies_the_dropout_mask():
    q, k, v = qkv(dtype=torch.float32)
    mask = key_mask()
    torch.manual_seed(5)
    y = attention(q, k, v, mask, False, 0.3)
    torch.manual_seed(5)
    s = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).masked_fill(~mask, float("-inf"))
    ref = kernels.apply_dropout(torch.softmax(s, -1), kernels.dropout_mask(s.shape, 0.3, s.dtype, s.device)) @ v
    torch.testing.assert_close(y, ref)
    without = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (y - without).abs().max() > 0.2  # the comparison above does see the draws


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("N", "V"), [(37, 101), (70, 4000), (9, 30522)])
def test_blockwise_cross_entropy_equals_cross_entropy_on_fp32_logits(dtype, N, V):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(N, V, generator=g)).to(dtype).requires_grad_()
    labels = torch.randint(0, V, (N,), generator=g)
    labels[::5] = -100
    labels[1] = logits[1].argmax()  # one right answer
    loss, argmax = mlm_cross_entropy(logits, labels)
    ref_logits = logits.detach().float().requires_grad_()
    ref = F.cross_entropy(ref_logits, labels, ignore_index=-100, reduction="sum")
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-5)
    assert torch.equal(argmax, ref_logits.argmax(-1))  # the same first maximum, ties included
    (2.0 * loss).backward()
    (2.0 * ref).backward()
    assert logits.grad.dtype == dtype
    # fp32: equal to rounding; bf16: the fp32 gradient rounded once, as the cast back would
    torch.testing.assert_close(logits.grad, ref_logits.grad.to(dtype), rtol=1e-5 if dtype == torch.float32 else 8e-3,
                               atol=1e-7 if dtype == torch.float32 else 1e-6)
    assert logits.grad[::5].abs().max() == 0  # ignored rows get no gradient


def test_blockwise_cross_entropy_without_any_label():
    logits = torch.randn(6, 50, requires_grad=True)
    loss, _ = mlm_cross_entropy(logits, torch.full((6,), -100))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().max() == 0


def odd_config(**kw) -> BertConfig:
    return BertConfig(vocab_size=101, hidden_size=36, num_hidden_layers=3, num_attention_heads=3,
                      intermediate_size=50, max_position_embeddings=20, **kw)


def padded_batch(B=4, T=17):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 101, (B, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 12:] = mask[2, 5:] = mask[3, 9:] = 0
    positions = torch.tensor([[1, 4, 7, 0], [2, 3, 0, 0], [1, 2, 3, 4], [1, 5, 6, 0]])[:B]
    labels = ids.gather(1, positions)
    labels[0, 3] = labels[1, 2:] = labels[3, 3] = -100
    return ids, mask, positions, labels, torch.tensor([0, 1, 0, 1])[:B]


def train_step(monkeypatch, unpad: bool, precision: str, causal: bool = False):
    monkeypatch.setattr(kernels, "UNPAD", unpad)
    torch.manual_seed(0)
    model = BertForPreTraining(odd_config(causal=causal)).train()  # dropout 0.1 everywhere
    ids, mask, positions, labels, nsp = padded_batch()
    torch.manual_seed(1)
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        out = model(ids, None, mask, positions)
    lo = pretraining_loss(out.mlm_logits, out.nsp_logits, labels, nsp)
    lo.loss.backward()
    return lo.loss.detach(), {k: p.grad for k, p in model.named_parameters()}, torch.rand(3)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("causal", [False, True])
def test_unpadded_training_equals_padded_with_the_same_dropout_draws(monkeypatch, precision, causal):
    padded = train_step(monkeypatch, False, precision, causal)
    unpadded = train_step(monkeypatch, True, precision, causal)
    tol = {"rtol": 1e-5, "atol": 1e-6} if precision == "fp32" else BF16
    torch.testing.assert_close(unpadded[0], padded[0], **tol)
    for k, g in padded[1].items():
        torch.testing.assert_close(unpadded[1][k], g, **tol, msg=k)
    assert torch.equal(unpadded[2], padded[2])  # the random stream continues identically


def test_unpadding_applies_only_to_padded_training_batches():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    pad = Unpadded.of(mask)
    assert pad is not None and pad.index.tolist() == [0, 1, 2, 4, 5]
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    back = pad.scatter(pad.gather(x))
    assert torch.equal(back[mask.bool()], x[mask.bool()]) and back[~mask.bool()].abs().max() == 0
    assert Unpadded.of(torch.ones(2, 4)) is None  # no padding
    assert Unpadded.of(None) is None
    with torch.no_grad():
        assert Unpadded.of(mask) is None  # inference keeps every position (HF computes them)


def test_bf16_training_step_matches_fp32_within_bf16_tolerance(monkeypatch):
    # The whole bf16 path (plain attention, blockwise loss, unpadding, fused q/k/v) against fp32.
    loss32, grads32, _ = train_step(monkeypatch, True, "fp32")
    loss16, grads16, _ = train_step(monkeypatch, True, "bf16")
    torch.testing.assert_close(loss16, loss32, rtol=1e-2, atol=1e-2)
    for k, g in grads32.items():
        if k.endswith("key.bias"):  # its gradient is 0 (a constant added to every score of a row): rounding noise only
            continue
        cos = F.cosine_similarity(grads16[k].flatten(), g.flatten(), dim=0)
        assert cos > 0.99, (k, cos.item())
