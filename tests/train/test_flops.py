"""Model FLOPs from the config (by hand and against torch's FlopCounterMode), the measured
peak (its statistic on a scripted clock: slow windows and a fast one ignored, the spread
kept), and MFU / tokens/s in a pretraining run's records and MLflow metrics."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bertpipe.model.bert import BertConfig, BertForPreTraining, pretraining_loss
from bertpipe.train.flops import (Peak, flops_per_token, forward_flops, measure_peak, model_peak, model_peak_stats, sample_peak,
                                  train_flops)
from bertpipe.train.loop import pretrain
from tests.train.conftest import records, tiny_cfg

# odd sizes everywhere, so that no factor can hide behind another: V=101, H=36, L=3, A=3, I=70
ODD = dict(vocab_size=101, hidden_size=36, num_hidden_layers=3, num_attention_heads=3, intermediate_size=70)
B, T, P = 5, 23, 4  # sequences, tokens per sequence, MLM slots per sequence


def test_forward_flops_by_hand_for_an_odd_config():
    f = forward_flops(BertConfig(**ODD), B, T, P)
    tokens = B * T  # 115
    assert f["encoder"] == 3 * (8 * 36 * 36 + 4 * 36 * 70) * tokens == 3 * (10_368 + 10_080) * 115 == 7_054_560
    assert f["attention"] == 3 * 4 * 23 * 36 * tokens == 1_142_640  # scores and probs·v: 2·2·T·H per token per layer
    assert f["mlm"] == (2 * 36 * 36 + 2 * 36 * 101) * (B * P) == 9_864 * 20 == 197_280  # transform + tied decoder at 20 slots
    assert f["pooler_nsp"] == (2 * 36 * 36 + 2 * 36 * 2) * B == 13_680
    assert f["fusion"] == 0  # summed embeddings: lookups and adds, no matmul
    assert train_flops(BertConfig(**ODD), B, T, P) == 3 * 8_408_160
    concat = forward_flops(BertConfig(**ODD, embedding_fusion="concat"), B, T, P)
    assert concat["fusion"] == 2 * 108 * 36 * tokens == 894_240  # the 3H -> H projection
    causal = forward_flops(BertConfig(**ODD, causal=True), B, T, P)
    assert causal["attention"] == f["attention"] // 2
    # without NSP the pooler and classifier only run forward: 1x instead of 3x
    assert train_flops(BertConfig(**ODD), B, T, P, nsp=False) == 3 * 8_408_160 - 2 * 13_680
    assert flops_per_token(BertConfig(**ODD), T, P) == pytest.approx(3 * 8_408_160 / 115)  # per token of the 115


def counted(cfg: BertConfig, nsp: bool = True, math_sdpa: bool = False) -> int:
    """Matmul FLOPs torch counts over one real forward + backward of the odd model."""
    torch.manual_seed(0)
    model = BertForPreTraining(cfg)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    positions = torch.randint(1, T, (B, P), generator=g)
    labels, nsl = torch.randint(0, cfg.vocab_size, (B, P), generator=g), torch.randint(0, 2, (B,), generator=g)
    with FlopCounterMode(display=False) as fc, sdpa_kernel(SDPBackend.MATH) if math_sdpa else nullcontext():
        o = model(ids, torch.zeros_like(ids), torch.ones_like(ids), positions)
        pretraining_loss(o.mlm_logits, o.nsp_logits, labels, nsl if nsp else None).loss.backward()
    return fc.get_total_flops()


@pytest.mark.parametrize("fusion", ["sum", "concat"])
@pytest.mark.parametrize("math_sdpa", [False, True])
def test_train_flops_equal_torchs_count_of_a_real_forward_backward(fusion, math_sdpa):
    # Exact, not within a few %: FlopCounterMode counts mm/addmm/bmm (2 FLOPs per multiply-add, bias
    # adds ignored, as here), and each product's backward is two products of the same size (input and
    # weight gradients), so backward = 2 x forward holds op by op. SDPA is counted as its q·kᵀ and
    # probs·v products on either backend (the counter runs it decomposed into bmm on CPU).
    cfg = BertConfig(**ODD, embedding_fusion=fusion)
    assert counted(cfg, math_sdpa=math_sdpa) == train_flops(cfg, B, T, P)
    assert counted(cfg, nsp=False) == train_flops(cfg, B, T, P, nsp=False)  # no NSP loss: pooler forward only


def test_a_causal_model_counts_half_the_attention_that_the_kernel_computes():
    cfg = BertConfig(**ODD, causal=True)
    full = forward_flops(BertConfig(**ODD), B, T, P)["attention"]
    # model FLOPs count the lower triangle; SDPA with a mask (what training passes) computes the whole square
    assert counted(cfg) - train_flops(cfg, B, T, P) == 3 * full // 2


def test_measured_peak_is_a_rate_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    peak = measure_peak("cpu", torch.float32, 256, 64, 128, samples=3)
    assert torch.equal(state, torch.get_rng_state())
    assert 1e8 < peak < 1e14  # FLOP/s: more than 0.1 GFLOP/s, less than 100 TFLOP/s on a CPU
    assert model_peak(BertConfig(**ODD), "cpu", "bf16", 128, samples=3) > 1e7


class ScriptedTimer:
    """A clock for ``sample_peak``: every product takes ``per_call`` seconds, except in the
    timed windows (counted from 0 after the warm-up) listed in ``slow``, which take
    ``slow_factor`` times as long (a neighbour took the cores), and ``fast``, half as long."""

    def __init__(self, per_call: float, slow: set[int], slow_factor: float = 4.0, fast: frozenset[int] = frozenset()):
        self.per_call, self.slow, self.slow_factor, self.fast = per_call, slow, slow_factor, fast
        self.warmup_calls, self.windows = 0, []

    def __call__(self, fn, n: int) -> float:
        if not self.windows and n == 1 and self.warmup_calls * self.per_call < 0.1:  # sample_peak's warm-up: 0.1 s
            self.warmup_calls += 1
            return self.per_call
        i = len(self.windows)
        self.windows.append(n)
        factor = self.slow_factor if i in self.slow else 0.5 if i in self.fast else 1.0
        return n * self.per_call * factor


def test_the_peak_is_the_clean_windows_rate_when_a_neighbour_slows_most_of_them():
    m, k, n, per_call = 64, 32, 48, 0.002
    rate = 2 * m * k * n / per_call
    # load in 9 of 15 windows, the first ones included (as when a neighbour's burst overlaps the start):
    # the median (or a mean) would report a quarter of the machine; the 0.9 quantile reports the machine
    timer = ScriptedTimer(per_call, slow={0, 1, 2, 3, 5, 7, 9, 11, 13})
    peak = sample_peak("cpu", torch.float32, m, k, n, timer=timer)
    assert timer.windows == [13] * 15  # 13 products of 2 ms fill a 25 ms window; 15 windows
    assert peak.flops_per_s == pytest.approx(rate)
    assert len(peak.samples) == 15 and sorted(peak.samples)[0] == pytest.approx(rate / 4)
    assert peak.spread == pytest.approx(0.75)  # (fastest - slowest) / peak: the load is visible in the record
    rec = peak.record()
    assert rec["peak_spread"] == 0.75 and rec["peak_quantile"] == 0.9 and len(rec["peak_samples_tflops"]) == 15
    assert rec["peak_samples_tflops"][0] == round(rate / 4 / 1e12, 4) and rec["peak_samples_tflops"][4] == round(rate / 1e12, 4)
    assert measure_peak("cpu", torch.float32, m, k, n, timer=ScriptedTimer(per_call, slow={0, 1, 2, 3, 5, 7, 9, 11, 13})) \
        == pytest.approx(rate)


def test_one_unusually_fast_window_does_not_set_the_peak():
    m, k, n, per_call = 64, 32, 48, 0.002
    rate = 2 * m * k * n / per_call
    peak = sample_peak("cpu", torch.float32, m, k, n, timer=ScriptedTimer(per_call, slow=set(), fast=frozenset({6})))
    assert max(peak.samples) == pytest.approx(2 * rate) and peak.flops_per_s == pytest.approx(rate)  # not best-of-N
    assert peak.spread == pytest.approx(1.0)


def test_the_quantile_interpolates_between_order_statistics_and_refuses_nonsense():
    p = Peak.of([5.0, 1.0, 3.0, 2.0, 4.0], quantile=0.9)  # sorted 1..5: position 3.6 -> 4.6
    assert p.flops_per_s == pytest.approx(4.6) and p.samples == (5.0, 1.0, 3.0, 2.0, 4.0)  # samples in measured order
    assert p.spread == pytest.approx(4 / 4.6)
    assert Peak.of([2.0, 7.0], quantile=1.0).flops_per_s == 7.0 and Peak.of([2.0, 7.0], quantile=0.5).flops_per_s == 4.5
    assert Peak.of([3.0]).flops_per_s == 3.0 and Peak.of([3.0]).spread == 0
    with pytest.raises(ValueError):
        Peak.of([])
    with pytest.raises(ValueError):
        Peak.of([1.0], quantile=1.5)


def test_the_model_peak_is_measured_at_the_ffn_shape_in_the_precisions_dtype(monkeypatch):
    import bertpipe.train.flops as flops

    seen, real = [], flops.F.linear

    def spy(a, w):
        seen.append((tuple(a.shape), tuple(w.shape), a.dtype))
        return real(a, w)

    def timer(fn, n):  # runs the product once, says each took 1 ms
        fn()
        return 0.001 * n

    monkeypatch.setattr(flops.F, "linear", spy)
    peak = model_peak_stats(BertConfig(**ODD), "cpu", "bf16", 115, timer=timer)
    assert set(seen) == {((115, 36), (70, 36), torch.bfloat16)}  # [tokens, H] x [H, I]
    assert peak.flops_per_s == pytest.approx(2 * 115 * 36 * 70 / 0.001) and peak.spread == 0
    assert peak.load_1m is not None and peak.load_1m >= 0  # Linux has a load average
    assert model_peak(BertConfig(**ODD), "cpu", "fp32", 115, timer=lambda fn, n: 0.002 * n) == pytest.approx(2 * 115 * 36 * 70 / 0.002)


def test_a_pretraining_run_logs_mfu_and_tokens_per_s_to_its_records_and_mlflow(static_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    from bertpipe.tracking import PipelineRun, metric_logger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = PipelineRun(uri, "exp", "pretrain", {}, {})
    pretrain(static_dir, tiny_cfg(steps=4, log_every=2, precision="bf16"), tmp_path / "run",
             on_metrics=metric_logger(uri, run.run_id))
    start = next(r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
                 if r.get("event") == "start")
    assert start["peak_tflops"] > 0 and start["peak_dtype"] == "torch.bfloat16" and start["peak_matmul"] == [16 * 64, 36, 72]
    assert len(start["peak_samples_tflops"]) == 15 and start["peak_spread"] >= 0 and start["peak_quantile"] == 0.9
    train = records(tmp_path / "run")
    assert [r["step"] for r in train] == [2, 4]
    for r in train:
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 10 and math.isfinite(r["mfu"]) and r["peak_tflops"] == start["peak_tflops"]
    client = MlflowClient(uri)
    m = client.get_run(run.run_id).data.metrics
    assert m["mfu"] == pytest.approx(train[-1]["mfu"]) and m["tokens_per_s"] == pytest.approx(train[-1]["tokens_per_s"])
    assert m["peak_tflops"] == pytest.approx(start["peak_tflops"]) and "train_mfu" not in m
    assert [h.step for h in client.get_metric_history(run.run_id, "mfu")] == [2, 4]
