"""Model FLOPs of a BERT pretraining step, counted from the config, and a measured matmul peak.

Purpose: MFU (model FLOPs utilization) = achieved model FLOP/s ÷ the peak FLOP/s of the same
device and dtype. ``train_flops`` gives the numerator's work, ``measure_peak`` the denominator,
timed in the same process on the same device and dtype, so the ratio says how close a step
runs to what this machine's matmul reaches now (on a shared CPU both move with the load).

The count (one multiply-add = 2 FLOPs; only matrix products count)::

    forward, per token of the padded batch (B sequences of T tokens, L layers, width H,
    FFN width I, vocabulary V, P predicted slots per sequence):
      encoder     L · (2·4H²  +  2·2·H·I)      Q, K, V, output projection; FFN in and out
      attention   L · 2·2·T·H                  q·kᵀ scores and probs·v (half when causal)
      fusion      2·3H·H                       only for embedding_fusion="concat" (3H -> H)
      embeddings  0                            lookups and the sum are not matmuls
    per predicted slot (the MLM head runs only at the P masked positions per sequence):
      transform   2·H²                         dense H -> H before GELU and LayerNorm
      decoder     2·H·V                        the tied word-embedding matrix
    per sequence:
      pooler+NSP  2·H² + 2·H·2                 tanh(dense(h[CLS])) and the 2-way classifier
    training step = 3 × forward (backward = 2 × forward: the gradient with respect to each
    matmul's input and to its weight), except that pooler+NSP count 1 × when the step has no
    NSP loss (they still run forward, but nothing backpropagates through them).

Trade-offs and choices
    * Counted at the shapes the step computes: padding tokens and padding prediction slots
      are included, so MFU measures how well the hardware is used; how much of the batch is
      real text is what ``tokens_per_s`` (non-padding tokens) shows.
    * Biases, LayerNorm, GELU, softmax, dropout and the optimizer are not counted (a few % of
      the matmul work at H >= 128); they cost time, so they lower MFU, as they should.
    * A causal model counts half of the attention products (the usual convention), although
      SDPA with an explicit mask computes all of them.
    * The peak is a matmul at the model's own shapes ([tokens, H] × [H, I], the FFN's first
      product), not a datasheet figure: it exists for every device (CPUs too), and it follows
      the shared machine's load. A datasheet peak, where one is known, is a separate figure.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from bertpipe.model.bert import BertConfig


def forward_flops(cfg: BertConfig, batch: int, seq_len: int, predictions: int) -> dict[str, int]:
    """Forward matmul FLOPs of ``BertForPreTraining`` on a (batch, seq_len) batch with
    ``predictions`` MLM slots per sequence, by part (see the module docstring)."""
    H, I, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    tokens, slots = batch * seq_len, batch * predictions
    attention = L * 2 * 2 * seq_len * H * tokens
    return {
        "encoder": L * (2 * 4 * H * H + 2 * 2 * H * I) * tokens,
        "attention": attention // 2 if cfg.causal else attention,
        "fusion": 2 * 3 * H * H * tokens if cfg.embedding_fusion == "concat" else 0,
        "mlm": (2 * H * H + 2 * H * V) * slots,
        "pooler_nsp": (2 * H * H + 2 * H * 2) * batch,
    }


def train_flops(cfg: BertConfig, batch: int, seq_len: int, predictions: int, nsp: bool = True) -> int:
    """Model FLOPs of one forward + backward on such a batch: 3 × forward (1 × for the
    pooler and NSP head when there is no NSP loss)."""
    f = forward_flops(cfg, batch, seq_len, predictions)
    return 3 * sum(v for k, v in f.items() if k != "pooler_nsp") + (3 if nsp else 1) * f["pooler_nsp"]


def flops_per_token(cfg: BertConfig, seq_len: int, predictions: int, nsp: bool = True) -> float:
    """Training FLOPs per (padded) token at this length and number of MLM slots per sequence."""
    return train_flops(cfg, 1, seq_len, predictions, nsp) / seq_len


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_peak(device: torch.device | str, dtype: torch.dtype, m: int, k: int, n: int, samples: int = 7,
                 target_s: float = 0.004) -> float:
    """FLOP/s of ``F.linear([m, k], [n, k])`` on ``device`` in ``dtype``: the median of
    ``samples`` timings, each of as many back-to-back products as fill about ``target_s``
    (one on a CPU at model shapes; dozens on a GPU, where one product takes microseconds).

    The operands are drawn from a private generator: the global RNG, and so training, is
    untouched. Random values, not zeros: a GPU runs faster on constant data.
    """
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, k, generator=gen, device=device).to(dtype)
    w = torch.randn(n, k, generator=gen, device=device).to(dtype)
    with torch.no_grad():
        F.linear(a, w)  # warm-up: kernel selection, allocator, packing
        _sync(device)
        t0 = time.perf_counter()
        F.linear(a, w)
        _sync(device)
        inner = max(1, math.ceil(target_s / max(time.perf_counter() - t0, 1e-7)))
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            for _ in range(inner):
                F.linear(a, w)
            _sync(device)
            times.append((time.perf_counter() - t0) / inner)
    return 2 * m * k * n / statistics.median(times)


def peak_dtype(precision: str) -> torch.dtype:
    """The matmul dtype of a training precision (autocast bf16/fp16 multiplies in that dtype)."""
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def model_peak(cfg: BertConfig, device: torch.device | str, precision: str, tokens: int, **kw) -> float:
    """``measure_peak`` at the model's FFN shape, [tokens, H] × [H, I], in the precision's dtype;
    under torch.distributed the mean over the ranks (which share the machine as they train)."""
    peak = measure_peak(device, peak_dtype(precision), tokens, cfg.hidden_size, cfg.intermediate_size, **kw)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([peak], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        peak = t.item() / dist.get_world_size()
    return peak
