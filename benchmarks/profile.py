"""Where a training step's time goes: ``torch.profiler`` self time by kind of work.

Purpose: ``bertpipe bench train --profile`` and ``bench finetune --profile`` print, for a
step function, the share of its operator self time (summed over threads) in matrix products,
attention kernels, dtype casts, dropout, the MLM cross-entropy, LayerNorm, GELU, softmax,
the optimizer, embeddings, fills and everything else, so a change can be aimed at the largest
share and its effect read from the same table. Shares are fractions of the profiled time:
they stay meaningful on a loaded machine, where absolute times do not.

``MatmulReplay`` (``matmul_time``) is the other half of the question "how far from the
limit": it records every matrix product a step calls (shapes, strides, dtypes; backward
included) and times them alone, replayed on random operands laid out as the step's were
(operands that viewed the same memory in the step, a weight read forward and transposed
backward, an activation and its weight gradient's read of it, view one random buffer, so the
replay holds about the step's working set: 2-3 GB at BERT-Base in fp32, not a copy per
product, which was 7.7 GB). The step's model FLOPs over that
time is the MFU the step would reach if everything but its matrix products were free: the
ceiling that removing elementwise work, casts and overhead can approach, set by torch's own
kernels at the step's shapes (on CPUs a weight gradient, which sums over all tokens, runs at
about half the speed of the forward product of the same size).

Trade-offs: the profiler adds ~5-10% overhead per operator, more for the many small ones,
so the shares of cheap elementwise work are slightly inflated; a category is assigned by
operator name (first match in ``CATEGORIES``), and anything run inside ``Optimizer.step`` or
``zero_grad`` counts as optimizer whatever its name.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

# (category, operator-name prefixes), checked in this order; unmatched operators are "other".
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("matmul", ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm", "aten::_addmm_activation")),
    ("attention kernel", ("aten::_scaled_dot_product", "aten::_flash_attention", "aten::_efficient_attention")),
    ("dtype casts", ("aten::copy_", "aten::_to_copy")),
    # random_: the masks of kernels.keep_mask; addcmul: kernels.apply_dropout
    ("dropout", ("aten::bernoulli_", "aten::native_dropout", "aten::random_", "aten::addcmul")),
    ("MLM cross-entropy", ("aten::_log_softmax", "aten::nll_loss", "aten::argmax", "aten::max", "aten::exp",
                           "aten::logsumexp", "aten::scatter_add_")),
    ("LayerNorm", ("aten::native_layer_norm",)),
    ("GELU", ("aten::gelu",)),
    ("attention softmax", ("aten::_softmax", "aten::_safe_softmax", "aten::masked_fill")),
    ("embedding", ("aten::embedding", "aten::index_select", "aten::index_add")),
    ("fill/zero", ("aten::fill_", "aten::zero_")),
)
OPTIMIZER = "optimizer"
OTHER = "other (elementwise, reductions, overhead)"


def _category(event) -> str:
    e = event
    while e is not None:  # anything inside Optimizer.step / zero_grad is the optimizer's
        if e.name.startswith(("Optimizer.step", "Optimizer.zero_grad")):
            return OPTIMIZER
        e = e.cpu_parent
    for name, prefixes in CATEGORIES:
        if event.name.startswith(prefixes):
            return name
    return OTHER


@dataclass
class StepProfile:
    """Operator self time per step by category (largest first), and each category's largest operators."""

    ms: dict[str, float]
    top: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.ms.values())

    def shares(self) -> dict[str, float]:
        """Each category's fraction of the total, rounded to 0.001."""
        return {k: round(v / self.total, 3) for k, v in self.ms.items()}

    def format(self, title: str) -> str:
        """A small table: category, share, ms per step, the largest operators in it."""
        lines = [f"{title}: {self.total:.0f} ms of operator time per step (all threads)"]
        for k, v in self.ms.items():
            ops = ", ".join(n.removeprefix("aten::") for n in self.top.get(k, []))
            lines.append(f"  {k:42s} {v / self.total:6.1%} {v:8.1f} ms   {ops}")
        return "\n".join(lines)


def profile_step(step: Callable[[], None], steps: int = 3, warmup: int = 2) -> StepProfile:
    """Profile ``steps`` calls of ``step`` after ``warmup`` unprofiled ones."""
    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    us: Counter[str] = Counter()
    by_op: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CPU:
            cat = _category(ev)
            us[cat] += ev.self_cpu_time_total
            by_op[cat][ev.name] += ev.self_cpu_time_total
    return StepProfile({k: v / 1e3 / steps for k, v in us.most_common()},
                       {c: [n for n, _ in ops.most_common(3)] for c, ops in by_op.items()})


_aten = torch.ops.aten
MATMUL_OPS = (_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default, _aten.addbmm.default,
              _aten._addmm_activation.default)


class _Operand(NamedTuple):
    """A recorded tensor operand: its layout, and which memory of the step it was a view of."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int  # in elements, into its storage
    dtype: torch.dtype
    device: torch.device
    storage: tuple[int, int]  # (address, bytes) of the step's storage it viewed

    @classmethod
    def of(cls, t: torch.Tensor) -> _Operand:
        st = t.untyped_storage()
        return cls(tuple(t.shape), t.stride(), t.storage_offset(), t.dtype, t.device, (st.data_ptr(), st.nbytes()))

    def view(self, buffers: dict, gen: torch.Generator) -> torch.Tensor:
        """The same view (transposed and broadcast included) of a random buffer standing for its storage:
        operands that shared memory in the step share it in the replay."""
        key = (self.storage, self.dtype, self.device)
        if key not in buffers:
            n = self.storage[1] // self.dtype.itemsize
            buffers[key] = torch.randn(n, generator=gen, device=self.device).to(self.dtype)
        return buffers[key].as_strided(self.shape, self.stride, self.offset)


class _MatmulRecorder(TorchDispatchMode):
    """Records (op, args with tensors as ``_Operand``, kwargs) of every matrix product."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMUL_OPS:
            spec = [_Operand.of(a) if isinstance(a, torch.Tensor) else a for a in args]
            self.calls.append((func, spec, kwargs))
        return func(*args, **kwargs)


def _flops(func, spec: list) -> int:
    """2·M·K·N (times the batch) of a recorded product of (.., M, K) and (.., K, N) operands."""
    first = 0 if func in (_aten.mm.default, _aten.bmm.default) else 1  # the others take an addend first
    a, b = spec[first : first + 2]
    return 2 * math.prod(a.shape) * b.shape[-1]


class MatmulTime(NamedTuple):
    seconds: float  # per step: the median of the replays of all the step's products, in order
    products: int  # matrix products one step calls
    flops: int  # their FLOPs (2 per multiply-add), the hardware's work: padding included


class MatmulReplay:
    """The matrix products of one call of a step, on random operands, ready to be timed alone."""

    def __init__(self, step: Callable[[], None], warmup: bool = True) -> None:
        if warmup:  # lazily built state (optimizer moments) is not recorded; False when the step already ran
            step()
        with _MatmulRecorder() as rec:
            step()
        operands = [a for _, spec, _ in rec.calls for a in spec if isinstance(a, _Operand)]
        self.device = operands[0].device if operands else torch.device("cpu")
        gen, buffers = torch.Generator(device=self.device).manual_seed(0), {}
        self.calls = [(func, [a.view(buffers, gen) if isinstance(a, _Operand) else a for a in spec], kw)
                      for func, spec, kw in rec.calls]
        self.bytes = sum(b.untyped_storage().nbytes() for b in buffers.values())  # the replay's operand memory
        self.flops = sum(_flops(func, spec) for func, spec, _ in rec.calls)

    def _replay(self) -> None:
        for func, args, kw in self.calls:
            func(*args, **kw)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def seconds(self, repeats: int = 5, warmup: bool = True) -> float:
        """The median of ``repeats`` timed replays of all the products, in order, after a warm-up one (unless
        ``warmup`` is False: when a replay ran before, as in a benchmark's later repetitions)."""
        with torch.no_grad():
            if warmup:
                self._replay()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                self._replay()
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def matmul_time(step: Callable[[], None], repeats: int = 5) -> MatmulTime:
    """The matrix products of one call of ``step`` (after a warm-up call), replayed alone on
    random operands of the same shapes, strides and dtypes (``MatmulReplay``)."""
    replay = MatmulReplay(step)
    return MatmulTime(replay.seconds(repeats), len(replay.calls), replay.flops)
