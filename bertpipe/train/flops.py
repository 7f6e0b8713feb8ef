"""Model FLOPs of a BERT pretraining step, counted from the config, and a measured matmul peak.

Purpose: MFU (model FLOPs utilization) = achieved model FLOP/s ÷ the peak FLOP/s of the same
device and dtype. ``train_flops`` gives the numerator's work, ``model_peak`` the denominator,
timed in the same process on the same device and dtype, so the ratio says how close a step
runs to what this machine's matmul reaches; ``model_peak_stats`` adds how much the timed
windows differed (a neighbour's load makes the step slower, and should not move the peak).

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
      product), not a datasheet figure: it exists for every device (CPUs too). A datasheet
      peak, where one is known, is a separate figure.
    * The peak should say what the machine can do, not what it did in the few milliseconds a
      neighbour left it: on a shared 2-core CPU one run and its exact reproduction measured
      0.21 and 0.42 TFLOP/s (one core lost for a moment). So after 0.1 s of warm-up it times
      ``samples`` windows of at least ``target_s`` each (15 × 25 ms: about half a second at
      the tiny model's shape, 1.7 s at BERT-Base's in fp32, where one product is a window)
      and takes a high quantile (0.9) of the per-window rates: windows a neighbour slowed are
      ignored as long as one in five ran clean, and no single unusually fast window decides
      it (the 0.9 quantile of 15 lies between the third and second fastest). ``Peak`` keeps
      every window's rate and their spread, (fastest − slowest) ÷ the peak, for the run's
      start record: near 0 on a quiet machine, 0.5 and more when load came and went. Under
      load that lasts the whole measurement the peak still drops (seen here: a neighbour's
      test run cut the fp32 peak from 0.22 to 0.03 TFLOP/s, every window alike, and the step
      with it); the spread cannot show that, so the 1-minute load average is kept beside it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


Timer = Callable[[Callable[[], None], int], float]  # (fn, n) -> seconds that n back-to-back calls of fn took


@dataclass(frozen=True)
class Peak:
    """A measured matmul peak: the figure MFU divides by, and the windows it was taken from."""

    flops_per_s: float  # the ``quantile`` of the per-window rates
    spread: float  # (fastest − slowest window) ÷ flops_per_s: ~0 on a quiet machine
    samples: tuple[float, ...]  # every window's rate, FLOP/s, in the order measured
    quantile: float
    load_1m: float | None = None  # the machine's 1-minute load average when it was measured (None: unknown)

    @classmethod
    def of(cls, rates: Sequence[float], quantile: float = 0.9, load_1m: float | None = None) -> Peak:
        """The ``quantile`` of ``rates`` (linear between order statistics, as numpy's default)."""
        if not rates or not 0 <= quantile <= 1:
            raise ValueError(f"need at least one rate and a quantile in [0, 1], got {len(rates)} and {quantile}")
        ordered = sorted(rates)
        pos = quantile * (len(ordered) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(ordered) - 1)
        value = ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])
        return cls(value, (ordered[-1] - ordered[0]) / value, tuple(rates), quantile, load_1m)

    def record(self) -> dict:
        """Fields for a run's start record beside ``peak_tflops``: the spread, each window's rate, the load."""
        return {"peak_spread": round(self.spread, 4), "peak_quantile": self.quantile,
                "peak_samples_tflops": [round(r / 1e12, 4) for r in self.samples], "peak_load_1m": self.load_1m}


def _timer(device: torch.device) -> Timer:
    def time_calls(fn: Callable[[], None], n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(device)
        return time.perf_counter() - t0

    return time_calls


def sample_peak(device: torch.device | str, dtype: torch.dtype, m: int, k: int, n: int, samples: int = 15,
                target_s: float = 0.025, quantile: float = 0.9, warmup_s: float = 0.1, timer: Timer | None = None) -> Peak:
    """FLOP/s of ``F.linear([m, k], [n, k])`` on ``device`` in ``dtype``, as a ``Peak``: after
    warming up (at least two products and ``warmup_s``), ``samples`` windows of as many
    back-to-back products as fill ``target_s`` (one at BERT-Base shapes on a CPU; hundreds on a
    GPU), and the ``quantile`` of their rates. ``timer`` times ``n`` calls of a function (a
    test passes its own clock; by default wall time, synchronized on CUDA).

    The operands are drawn from a private generator: the global RNG, and so training, is
    untouched. Random values, not zeros: a GPU runs faster on constant data.
    """
    device = torch.device(device)
    timer = timer or _timer(device)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, k, generator=gen, device=device).to(dtype)
    w = torch.randn(n, k, generator=gen, device=device).to(dtype)

    def product() -> None:
        F.linear(a, w)

    with torch.no_grad():
        one, spent, calls = math.inf, 0.0, 0  # warm-up: kernel selection, allocator, packing, clocks
        while calls < 2 or spent < warmup_s:
            t = timer(product, 1)
            one, spent, calls = min(one, t), spent + t, calls + 1
        inner = max(1, math.ceil(target_s / max(one, 1e-7)))
        rates = [2 * m * k * n * inner / max(timer(product, inner), 1e-12) for _ in range(samples)]
    return Peak.of(rates, quantile, os.getloadavg()[0] if hasattr(os, "getloadavg") else None)


def measure_peak(device: torch.device | str, dtype: torch.dtype, m: int, k: int, n: int, **kw) -> float:
    """``sample_peak``'s FLOP/s alone."""
    return sample_peak(device, dtype, m, k, n, **kw).flops_per_s


def peak_dtype(precision: str) -> torch.dtype:
    """The matmul dtype of a training precision (autocast bf16/fp16 multiplies in that dtype)."""
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def model_peak_stats(cfg: BertConfig, device: torch.device | str, precision: str, tokens: int, **kw) -> Peak:
    """``sample_peak`` at the model's FFN shape, [tokens, H] × [H, I], in the precision's dtype;
    under torch.distributed the peak and spread are the means over the ranks (which share the
    machine as they train), the window rates this rank's."""
    peak = sample_peak(device, peak_dtype(precision), tokens, cfg.hidden_size, cfg.intermediate_size, **kw)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([peak.flops_per_s, peak.spread], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        t /= dist.get_world_size()
        peak = dataclasses.replace(peak, flops_per_s=t[0].item(), spread=t[1].item())
    return peak


def model_peak(cfg: BertConfig, device: torch.device | str, precision: str, tokens: int, **kw) -> float:
    """``model_peak_stats``' FLOP/s: the denominator of MFU."""
    return model_peak_stats(cfg, device, precision, tokens, **kw).flops_per_s
