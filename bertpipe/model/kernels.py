"""Fast paths under ``bert.py``: attention as plain products where torch's fused kernel is slow,
a blockwise cross-entropy over the vocabulary, and layers that skip padding. Same math as the
plain forms, less work.

Purpose
    ``bert.py`` states the model; this module holds the two places where the obvious PyTorch
    call wastes most of a CPU training step (measured with ``torch.profiler`` on the
    ``bertpipe bench train`` model, hidden 256, 4 layers, length 128, bf16 autocast, torch
    2.13, one thread; the step was ~770 ms):

    * ``attention``: ``F.scaled_dot_product_attention``'s fused CPU kernel has a slow bf16
      backward: 46 ms per layer at (32, 4, 128, 64), where the plain products
      ``softmax(q kᵀ / √d) v`` take 14 ms forward and backward; at length 512 the two are even
      (48 ms) and in fp32 the fused kernel is as fast or faster. So the plain form is used only
      for CPU training (inputs that need a gradient) in a reduced dtype up to ``PLAIN_MAX_LEN``
      tokens; everything else (fp32, inference, GPUs, long sequences) calls SDPA.
    * ``mlm_cross_entropy``: ``F.cross_entropy(logits.float(), labels)`` over the MLM head's
      (N, V) logits materializes an fp32 copy of the logits, their log-softmax, a zero-filled
      gradient, and casts that gradient back to bf16, plus a separate ``argmax`` pass for the
      accuracy: 30% of the step above at V = 30522. Here the rows are processed in blocks of
      about ``BLOCK_ELEMENTS`` values that stay in the L2 cache: the forward keeps only the
      per-row log-sum-exp and argmax, the backward recomputes ``softmax - onehot`` block by
      block and writes the gradient once, in the logits' dtype (3.2x faster in bf16, 2x in
      fp32, same loss; the gradient equal to fp32 rounding).

    * ``keep_mask`` / ``apply_dropout``: torch's CPU dropout draws one mt19937 number per
      element (``bernoulli_``): a quarter of a bf16 fine-tuning step of MiniLM on tweets. Here
      one 64-bit draw gives four 16-bit lanes, each compared with ``round(p·2¹⁶)``: the mask
      is 4.6-5.5x faster than ``bernoulli_`` (1.4 ms against 6.3 ms at (32, 128, 256), 6.9 ms
      against 37.5 ms at (32, 12, 128, 128)). The rate is p rounded to a multiple of 2⁻¹⁶
      (0.1 → 0.100006); the kept values are multiplied by 1 / (1 - that rate) in fp32
      arithmetic and rounded once (one ``addcmul`` forward and backward, as fast as a plain
      product), so the expectation is exact in bf16 too (a bf16 factor would be 1.109 for
      1.111: 0.16% low). GPUs draw the mask with torch's ``bernoulli_`` (Philox).

    * ``Unpadded``: a batch cut to its longest row still pads the shorter ones (fine-tuning
      sets: tweets of 10-60 tokens). While training (gradients on), the per-token layers
      (projections, FFN, LayerNorm, residuals, hidden dropout) run on the (N, H) rows of the
      real tokens only; attention scatters q, k, v back to (B, T) and gathers its output.
      The real tokens' results are the same math (rows of a product do not depend on the
      other rows); the hidden dropout draws its mask on the padded shape and keeps the real
      rows, so a seeded run draws the same random numbers either way.

Trade-offs
    * Unpadding costs a gather and a scatter per layer; it is used only when at most
      ``UNPAD_BELOW`` of the batch is real tokens, never under ``torch.compile`` (the number
      of real tokens changes every batch) or without gradients (evaluation keeps every
      position's output, as HF computes them).
    * The plain attention rounds the scores q kᵀ to bf16 before the softmax (as HF's eager BERT
      does under autocast); SDPA keeps them in fp32. Outputs differ from SDPA's by about one
      bf16 step (~1e-2 relative), within the tolerance bf16 training has anyway (tests).
    * Its masked scores are set to the dtype's lowest value, not -inf: a query whose keys are
      all masked (a sequence with no real token) averages them instead of giving SDPA's zeros;
      such rows are padding and are never read.
    * With dropout, SDPA's CPU kernels take its math path (these same products, in fp32 too),
      so CPU training with attention dropout always takes the plain products, whose mask
      comes from ``keep_mask`` on the (B, A, T, T) probabilities.
    * The cross-entropy's Python loop costs a few dispatches per block (~1 ms per step at V =
      30522); larger blocks spill out of L2 and get slower.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# The longest sequence the plain attention is used for: at 256 it is still 1.4x faster than
# SDPA's fused bf16 backward, at 512 they are even (and its (T, T) scores grow quadratically).
PLAIN_MAX_LEN = 256
# Values per block of the cross-entropy (fp32: 512 KiB, a quarter of one core's 2 MiB L2 here,
# leaving room for the block's temporaries): 4 rows at V = 30522, 32 at V = 4000.
BLOCK_ELEMENTS = 131_072
# Unpad a batch whose real tokens are at most this share of its (B, T) positions; above it the
# gathers and scatters cost about what the padding does.
UNPAD_BELOW = 0.9
UNPAD = True  # off: always the padded computation (tests compare the two)


def use_plain_attention(q: Tensor, dropout_p: float = 0.0) -> bool:
    """Whether ``attention`` takes the plain products for ``q`` of shape (B, A, T, d)."""
    return (q.device.type == "cpu" and q.requires_grad and (q.dtype in (torch.bfloat16, torch.float16) or dropout_p > 0)
            and q.shape[-2] <= PLAIN_MAX_LEN)


def _dropped_lanes(p: float) -> int:
    """Of the 2¹⁶ values of a 16-bit lane, how many mean "dropped": the rate is this / 2¹⁶."""
    return round(p * 65536)


def keep_mask(shape: tuple[int, ...], p: float, device: torch.device | str = "cpu") -> Tensor:
    """Boolean ``shape``: each element False (dropped) with probability ``_dropped_lanes(p) / 2¹⁶``,
    drawn from torch's default generator of ``device`` (seeded runs and resume as before)."""
    n = math.prod(shape)
    words = torch.empty(-(-n // 4), dtype=torch.int64, device=device).random_(-(2**63), None)  # all 2^64 values
    lanes = words.view(torch.int16)[:n]  # four 16-bit lanes per draw, each uniform on [-2^15, 2^15)
    return (lanes >= _dropped_lanes(p) - 32768).view(shape)


class DropoutMask(NamedTuple):
    """What dropout multiplies by: ``keep`` (1 kept, 0 dropped, in the input's dtype) × ``scale``."""

    keep: Tensor
    scale: float  # 1 / (1 - the rate drawn), applied in fp32 arithmetic


def dropout_mask(shape: tuple[int, ...], p: float, dtype: torch.dtype, device: torch.device) -> DropoutMask:
    """A dropout mask for a tensor of ``shape``: on CPU from ``keep_mask``; elsewhere torch's
    ``bernoulli_``, as ``F.dropout`` draws it."""
    if device.type != "cpu":
        return DropoutMask(torch.empty(shape, dtype=dtype, device=device).bernoulli_(1 - p), 1 / (1 - p))
    return DropoutMask(keep_mask(shape, p, device).to(dtype), 1 / (1 - _dropped_lanes(p) / 65536))


class _ApplyDropout(torch.autograd.Function):
    """x · keep · scale, each element rounded once to x's dtype; the gradient alike."""

    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.addcmul(x.new_zeros(()), x, keep, value=scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return torch.addcmul(grad.new_zeros(()), grad, keep, value=ctx.scale), None, None


def apply_dropout(x: Tensor, mask: DropoutMask) -> Tensor:
    """``x`` with ``mask`` applied (``mask.keep`` broadcastable to x, in x's dtype)."""
    return _ApplyDropout.apply(x, mask.keep, mask.scale)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float) -> Tensor:
    """``softmax(q kᵀ / √d + mask) v`` for q, k, v of (B, A, T, d); ``mask`` (B, 1, 1 or T, T)
    boolean, True = may attend; ``is_causal`` only without ``mask``. Returns (B, A, T, d)."""
    if not use_plain_attention(q, dropout_p):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout_p)
    T = q.shape[-2]
    if is_causal:
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # (T, T)
    s = torch.matmul(q, k.transpose(-2, -1)).mul_(q.shape[-1] ** -0.5)  # (B, A, T, T)
    if mask is not None:
        s = s.masked_fill_(~mask, torch.finfo(s.dtype).min)
    p = torch.softmax(s, dim=-1)  # in q's dtype: CPU autocast leaves softmax alone
    if dropout_p:
        p = apply_dropout(p, dropout_mask(p.shape, dropout_p, p.dtype, p.device))
    return torch.matmul(p, v)  # (B, A, T, d)


class _BlockwiseCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of (N, V) logits against (N,) labels (-100: ignored) and each
    row's argmax; fp32 arithmetic on blocks of rows, gradient in the logits' dtype."""

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        N, V = logits.shape
        block = max(1, BLOCK_ELEMENTS // V)
        lse = torch.empty(N, dtype=torch.float32, device=logits.device)  # log-sum-exp per row
        argmax = torch.empty(N, dtype=torch.long, device=logits.device)
        for lo in range(0, N, block):
            x = logits[lo : lo + block].float()  # (block, V)
            top, argmax[lo : lo + block] = x.max(-1)  # the first maximum, as argmax (exact after .float())
            lse[lo : lo + block] = (x - top[:, None]).exp_().sum(-1).log_().add_(top)
        real = labels != -100
        target = logits.gather(1, labels.clamp(min=0)[:, None]).squeeze(1).float()  # (N,)
        ctx.save_for_backward(logits, labels, lse)
        ctx.mark_non_differentiable(argmax)
        return torch.where(real, lse - target, 0.0).sum(), argmax

    @staticmethod
    def backward(ctx, grad: Tensor, _argmax_grad: Tensor) -> tuple[Tensor, None]:
        logits, labels, lse = ctx.saved_tensors
        N, V = logits.shape
        block = max(1, BLOCK_ELEMENTS // V)
        scale = grad * (labels != -100)  # (N,): ignored rows get no gradient
        target = labels.clamp(min=0)[:, None]  # (N, 1)
        out = torch.empty_like(logits)
        for lo in range(0, N, block):
            p = (logits[lo : lo + block] - lse[lo : lo + block, None]).exp_()  # softmax, fp32
            p.scatter_add_(1, target[lo : lo + block], torch.full_like(p[:, :1], -1.0))  # - onehot
            torch.mul(p, scale[lo : lo + block, None], out=out[lo : lo + block])  # rounded once to out's dtype
        return out, None


def mlm_cross_entropy(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Sum over rows of ``F.cross_entropy(logits.float(), labels, ignore_index=-100)`` and the
    rows' ``argmax`` (equal to ``logits.argmax(-1)``), for (N, V) logits of any float dtype."""
    return _BlockwiseCrossEntropy.apply(logits, labels)


class Unpadded(NamedTuple):
    """Where the real tokens of a padded (B, T) batch are, for layers that run on them only."""

    index: Tensor  # (N,) flat positions b * T + t of the real tokens
    shape: tuple[int, int]  # (B, T)

    @staticmethod
    def of(attention_mask: Tensor | None) -> Unpadded | None:
        """The real tokens of ``attention_mask`` (B, T), or None where the padded computation is
        used: no mask, too little padding, no gradients, or under ``torch.compile``."""
        if attention_mask is None or not UNPAD or not torch.is_grad_enabled() or torch.compiler.is_compiling():
            return None
        real = attention_mask.reshape(-1) != 0  # (B*T,)
        if real.sum() > UNPAD_BELOW * real.numel():
            return None
        return Unpadded(real.nonzero().squeeze(1), tuple(attention_mask.shape))

    def gather(self, x: Tensor) -> Tensor:
        """(B, T, F) -> (N, F): the real tokens' rows."""
        return x.reshape(-1, x.shape[-1]).index_select(0, self.index)

    def scatter(self, x: Tensor) -> Tensor:
        """(N, F) -> (B, T, F), zeros at the padding."""
        B, T = self.shape
        return x.new_zeros(B * T, x.shape[-1]).index_copy(0, self.index, x).view(B, T, -1)

    def dropout(self, x: Tensor, p: float) -> Tensor:
        """Dropout of (N, F) rows with the noise drawn for the padded (B, T, F) tensor, so that
        the padded computation's draws, and the random stream after them, are the same."""
        mask = dropout_mask((self.shape[0] * self.shape[1], x.shape[-1]), p, x.dtype, x.device)  # (B*T, F)
        return apply_dropout(x, mask._replace(keep=mask.keep.index_select(0, self.index)))


def dropout(module: torch.nn.Dropout, x: Tensor, pad: Unpadded | None = None) -> Tensor:
    """``module(x)`` with ``dropout_mask``'s mask; x of (N, F) real-token rows when ``pad`` is given."""
    if not module.training or module.p == 0:
        return x
    if pad is not None:
        return pad.dropout(x, module.p)
    return apply_dropout(x, dropout_mask(x.shape, module.p, x.dtype, x.device))
