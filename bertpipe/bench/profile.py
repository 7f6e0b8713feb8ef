"""Where a training step's time goes: ``torch.profiler`` self time by kind of work.

Purpose: ``bertpipe bench train --profile`` and ``bench finetune --profile`` print, for a
step function, the share of its operator self time (summed over threads) in matrix products,
attention kernels, dtype casts, dropout, the MLM cross-entropy, LayerNorm, GELU, softmax,
the optimizer, embeddings, fills and everything else, so a change can be aimed at the largest
share and its effect read from the same table. Shares are fractions of the profiled time:
they stay meaningful on a loaded machine, where absolute times do not.

Trade-offs: the profiler adds ~5-10% overhead per operator, more for the many small ones,
so the shares of cheap elementwise work are slightly inflated; a category is assigned by
operator name (first match in ``CATEGORIES``), and anything run inside ``Optimizer.step`` or
``zero_grad`` counts as optimizer whatever its name.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.profiler import ProfilerActivity, profile

# (category, operator-name prefixes), checked in this order; unmatched operators are "other".
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("matmul", ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm", "aten::_addmm_activation")),
    ("attention kernel", ("aten::_scaled_dot_product", "aten::_flash_attention", "aten::_efficient_attention")),
    ("dtype casts", ("aten::copy_", "aten::_to_copy")),
    ("dropout", ("aten::bernoulli_", "aten::native_dropout", "aten::random_")),  # random_: the masks of kernels.keep_mask
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
