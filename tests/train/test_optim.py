"""Tests for bertpipe.train.optim: updates checked against NumPy float64 references."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from bertpipe.train.optim import (
    BertAdam,
    Lamb,
    OptimConfig,
    build_optimizer,
    build_scheduler,
    param_groups,
)


class TinyNet(nn.Module):
    """Two linear layers (with biases) around a LayerNorm: both kinds of groups."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(6, 8)
        self.LayerNorm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.LayerNorm(self.dense(x))))


def _model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def _batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g)) for _ in range(n)]


def _backward(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    model.zero_grad(set_to_none=True)
    nn.functional.mse_loss(model(x), y).backward()


def _run(model: nn.Module, opt: torch.optim.Optimizer, batches) -> None:
    for b in batches:
        _backward(model, b)
        opt.step()


def _run_against_reference(model, opt, batches, reference_step):
    """Step the torch optimizer; feed the same float32 grads to a float64 NumPy reference.

    The reference keeps its own float64 weights and moments, so only the update formula is
    shared, never intermediate state.
    """
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    ref = {n: params[n].detach().double().numpy().copy() for n in names}
    m = {n: np.zeros_like(ref[n]) for n in names}
    v = {n: np.zeros_like(ref[n]) for n in names}
    extras: list[dict[str, float]] = []
    for t, b in enumerate(batches, start=1):
        _backward(model, b)
        info: dict[str, float] = {}
        for n in names:
            g = params[n].grad.detach().double().numpy()
            ref[n], info[n] = reference_step(ref[n], g, m[n], v[n], t, wd_of[id(params[n])])
        extras.append(info)
        opt.step()
    return ref, params, extras


def _numpy_bert_adam(lr, b1, b2, eps):
    def step(w, g, m, v, t, wd):
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        u = m / (np.sqrt(v) + eps)
        if wd > 0:
            u = u + wd * w
        return w - lr * u, 1.0

    return step


def _numpy_lamb(lr, b1, b2, eps):
    def step(w, g, m, v, t, wd):
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        u = m_hat / (np.sqrt(v_hat) + eps) + wd * w
        wn, un = np.linalg.norm(w), np.linalg.norm(u)
        ratio = wn / un if wn > 0 and un > 0 else 1.0
        return w - lr * ratio * u, ratio

    return step


def _assert_close_to_reference(ref, params):
    for n, w in ref.items():
        got = params[n].detach().double().numpy()
        np.testing.assert_allclose(got, w, rtol=2e-6, atol=1e-7, err_msg=n)


def test_bert_adam_matches_numpy_reference():
    model = _model()
    lr, betas, eps, wd = 1e-2, (0.9, 0.999), 1e-6, 0.05
    opt = BertAdam(param_groups(model, wd), lr=lr, betas=betas, eps=eps)
    assert {g["weight_decay"] for g in opt.param_groups} == {wd, 0.0}
    reference = _numpy_bert_adam(lr, *betas, eps)
    ref, params, _ = _run_against_reference(model, opt, _batches(20), reference)
    _assert_close_to_reference(ref, params)
    # The weights really moved, so the comparison is not trivially about initial values.
    start = dict(_model().named_parameters())
    assert all(not torch.allclose(params[n], start[n]) for n in params)


def test_bert_adam_has_no_bias_correction():
    """First update is (1-b1)/sqrt(1-b2) ~ 3.16x AdamW's, not equal to it.

    eps is made negligible so that the ratio isolates the missing bias correction.
    """
    b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-12
    model_a, model_b = _model(), _model()
    start = {n: p.detach().clone() for n, p in model_a.named_parameters()}
    hp = {"lr": lr, "betas": (b1, b2), "eps": eps, "weight_decay": 0.0}
    bert = BertAdam(model_a.parameters(), **hp)
    adamw = torch.optim.AdamW(model_b.parameters(), **hp)
    batch = _batches(1)[0]
    for model, opt in ((model_a, bert), (model_b, adamw)):
        _backward(model, batch)
        opt.step()
    def delta(model: nn.Module) -> torch.Tensor:
        return torch.cat([(p.detach() - start[n]).flatten() for n, p in model.named_parameters()])

    delta_bert, delta_adam = delta(model_a), delta(model_b)
    big = delta_adam.abs() > 0.5 * lr  # skip entries with zero gradient
    assert big.sum() > 50
    ratio = (delta_bert[big] / delta_adam[big]).double()
    expected = (1 - b1) / np.sqrt(1 - b2)
    assert expected > 3.0
    np.testing.assert_allclose(ratio.numpy(), expected, rtol=1e-3)


def test_adamw_config_matches_independent_torch_adamw():
    cfg = OptimConfig(optimizer="adamw", lr=3e-3, weight_decay=0.1)
    model_a, model_b = _model(), _model()
    opt_a = build_optimizer(model_a, cfg)
    assert type(opt_a) is torch.optim.AdamW and opt_a.defaults["fused"]
    # Groups written out by hand, not via param_groups.
    no_decay = {"dense.bias", "LayerNorm.weight", "LayerNorm.bias", "out.bias"}
    named = list(model_b.named_parameters())
    opt_b = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if n not in no_decay], "weight_decay": 0.1},
            {"params": [p for n, p in named if n in no_decay], "weight_decay": 0.0},
        ],
        lr=3e-3,
        betas=(0.9, 0.999),
        eps=1e-6,
        fused=True,
    )
    batches = _batches(15)
    _run(model_a, opt_a, batches)
    _run(model_b, opt_b, batches)
    for (n, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        assert torch.equal(pa, pb), n
    assert not torch.equal(model_a.dense.weight, _model().dense.weight)


def test_fused_adamw_equals_the_default_implementation_to_rounding():
    # build_optimizer takes torch's fused AdamW for speed; the for-loop implementation (what
    # AdamW runs on a CPU by default) gives the same weights up to float32 rounding.
    cfg = OptimConfig(optimizer="adamw", lr=3e-3, weight_decay=0.1)
    fused, plain = _model(), _model()
    opt_plain = torch.optim.AdamW(param_groups(plain, 0.1), lr=3e-3, betas=(0.9, 0.999), eps=1e-6, foreach=False)
    batches = _batches(30)
    _run(fused, build_optimizer(fused, cfg), batches)
    _run(plain, opt_plain, batches)
    for (n, pa), pb in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=n)


def test_lamb_matches_numpy_reference():
    model = _model()
    lr, betas, eps, wd = 1e-2, (0.9, 0.999), 1e-6, 0.01
    cfg = OptimConfig(optimizer="lamb", lr=lr, betas=betas, eps=eps, weight_decay=wd)
    opt = build_optimizer(model, cfg)
    assert type(opt) is Lamb
    reference = _numpy_lamb(lr, *betas, eps)
    ref, params, extras = _run_against_reference(model, opt, _batches(20), reference)
    _assert_close_to_reference(ref, params)
    # The trust ratio is not ~1 here, so dropping it would fail the comparison above,
    # and the zero-initialised LayerNorm bias exercised the ||w|| == 0 fallback at step 1.
    ratios = np.array([r for info in extras for r in info.values()])
    assert np.abs(ratios - 1.0).max() > 0.5
    assert extras[0]["LayerNorm.bias"] == 1.0


def test_lamb_zero_update_leaves_param_finite_and_unchanged():
    w = nn.Parameter(torch.randn(4, 4))
    before = w.detach().clone()
    opt = Lamb([{"params": [w], "weight_decay": 0.0}], lr=0.1)
    w.grad = torch.zeros_like(w)
    opt.step()
    assert torch.equal(w.detach(), before)


def test_param_groups_rule():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.proj = nn.Linear(4, 4)
            self.layer_norm = nn.LayerNorm(4)
            self.norm = nn.LayerNorm(4)  # not named like a LayerNorm: caught by the 1-D rule
            self.scale = nn.Parameter(torch.ones(4))
            self.temperature = nn.Parameter(torch.tensor(1.0))
            self.LayerNorm_gamma2d = nn.Parameter(torch.ones(1, 4))  # 2-D but named LayerNorm
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight  # tied
            self.frozen = nn.Parameter(torch.ones(3, 3), requires_grad=False)

    net = Net()
    groups = param_groups(net, 0.02)
    assert [g["weight_decay"] for g in groups] == [0.02, 0.0]
    name_of = {id(p): n for n, p in net.named_parameters()}
    decay = {name_of[id(p)] for p in groups[0]["params"]}
    no_decay = {name_of[id(p)] for p in groups[1]["params"]}
    assert decay == {"emb.weight", "proj.weight"}
    assert no_decay == {
        "proj.bias",
        "layer_norm.weight",
        "layer_norm.bias",
        "norm.weight",
        "norm.bias",
        "scale",
        "temperature",
        "LayerNorm_gamma2d",
    }
    flat = [id(p) for g in groups for p in g["params"]]
    assert len(flat) == len(set(flat))
    # No empty group when nothing is decayed.
    assert [g["weight_decay"] for g in param_groups(nn.LayerNorm(3), 0.01)] == [0.0]


def _lrs(cfg: OptimConfig, total: int) -> list[float]:
    """lr used at each optimizer step 0..total (inclusive), for every group."""
    model = _model()
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total)
    out = []
    for _ in range(total + 1):
        group_lrs = {g["lr"] for g in opt.param_groups}
        assert len(group_lrs) == 1
        out.append(group_lrs.pop())
        opt.step()  # no grads: a no-op, keeps the scheduler warning-free
        sched.step()
    return out


def test_linear_schedule_with_warmup_steps():
    lr = _lrs(OptimConfig(lr=1e-3, warmup_steps=10), total=50)
    assert lr[0] == 0.0
    assert lr[5] == pytest.approx(5e-4, rel=1e-12)
    assert lr[10] == pytest.approx(1e-3, rel=1e-12)
    assert lr[30] == pytest.approx(5e-4, rel=1e-12)  # halfway through 40 decay steps
    assert lr[49] == pytest.approx(1e-3 / 40, rel=1e-12)
    assert lr[50] == 0.0
    assert max(lr) == lr[10]
    assert all(a < b for a, b in zip(lr[:10], lr[1:11]))
    assert all(a > b for a, b in zip(lr[10:50], lr[11:51]))


def test_warmup_ratio_overrides_steps_and_constant_schedule():
    cfg = OptimConfig(lr=2e-4, warmup_steps=10_000, warmup_ratio=0.1)
    assert cfg.resolve_warmup(200) == 20
    lr = _lrs(cfg, total=200)
    assert lr[10] == pytest.approx(1e-4, rel=1e-12)
    assert lr[20] == pytest.approx(2e-4, rel=1e-12)
    assert lr[110] == pytest.approx(1e-4, rel=1e-12)
    assert lr[200] == 0.0

    lr = _lrs(OptimConfig(lr=2e-4, warmup_steps=4, schedule="constant"), total=20)
    assert lr[2] == pytest.approx(1e-4, rel=1e-12)
    assert lr[4:] == [pytest.approx(2e-4, rel=1e-12)] * 17


def test_scheduler_rejects_warmup_longer_than_run():
    opt = build_optimizer(_model(), OptimConfig())
    with pytest.raises(ValueError, match="warmup"):
        build_scheduler(opt, OptimConfig(), total_steps=1000)  # paper's 10k warmup


def test_config_defaults_and_validation():
    cfg = OptimConfig()
    assert (cfg.optimizer, cfg.lr, cfg.betas) == ("bert_adam", 1e-4, (0.9, 0.999))
    assert (cfg.eps, cfg.weight_decay, cfg.warmup_steps) == (1e-6, 0.01, 10_000)
    assert (cfg.warmup_ratio, cfg.clip_norm, cfg.schedule) == (None, 1.0, "linear")
    assert type(build_optimizer(_model(), cfg)) is BertAdam
    bads = ({"betas": (0.9, 1.0)}, {"lr": 0.0}, {"warmup_ratio": 1.5}, {"name": "sgd"}, {"lr_x": 1})
    for bad in bads:
        with pytest.raises(ValueError):
            OptimConfig(**bad)
    with pytest.raises(ValueError):
        BertAdam(_model().parameters(), eps=-1.0)


@pytest.mark.parametrize("name", ["bert_adam", "adamw", "lamb"])
def test_state_dict_round_trip_is_bit_exact(name):
    cfg = OptimConfig(optimizer=name, lr=1e-2, warmup_steps=3)
    batches = _batches(12)

    model = _model()
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=12)
    for b in batches[:5]:
        _backward(model, b)
        opt.step()
        sched.step()
    buf = io.BytesIO()
    ckpt = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    torch.save(ckpt, buf)

    # Resume into fresh objects built from a different initialisation.
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = _model(seed=123)
    resumed.load_state_dict(ckpt["model"])
    opt2 = build_optimizer(resumed, cfg)
    sched2 = build_scheduler(opt2, cfg, total_steps=12)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])

    for m, o, s in ((model, opt, sched), (resumed, opt2, sched2)):
        for b in batches[5:]:
            _backward(m, b)
            o.step()
            s.step()
    for (n, pa), pb in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(pa, pb), n

    # Without the optimizer state the continuation differs (the test can fail).
    fresh = _model(seed=123)
    fresh.load_state_dict(ckpt["model"])
    opt3 = build_optimizer(fresh, cfg)
    for g, saved in zip(opt3.param_groups, ckpt["opt"]["param_groups"]):
        g["lr"] = saved["lr"]
    _run(fresh, opt3, batches[5:])
    assert not torch.equal(fresh.dense.weight, model.dense.weight)
