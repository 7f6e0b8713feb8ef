"""``benchmarks.profile``: the step profile's categories and the matrix products replayed alone."""

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.profile import OPTIMIZER, matmul_time, profile_step
from bertpipe.model.bert import BertConfig, BertForPreTraining, pretraining_loss


def _tiny_step(precision: str):
    cfg = BertConfig(vocab_size=97, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
                     max_position_embeddings=16)
    torch.manual_seed(0)
    model = BertForPreTraining(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    ids, mask = torch.randint(1, 97, (3, 11), generator=g), torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0  # padding: the unpadded layers run on 29 real tokens
    positions, labels, nsp = torch.tensor([[1, 4], [2, 5], [3, 9]]), torch.randint(1, 97, (3, 2), generator=g), torch.tensor([0, 1, 0])

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(ids, torch.zeros_like(ids), mask, masked_positions=positions)
        pretraining_loss(out.mlm_logits, out.nsp_logits, labels, nsp).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def test_the_replayed_products_are_the_steps_own():
    for precision in ("fp32", "bf16"):
        step = _tiny_step(precision)
        step()
        with FlopCounterMode(display=False) as counter:
            step()
        t = matmul_time(step, repeats=2)
        # every product the step calls, backward included: torch's own FLOP count of a step agrees
        assert t.flops == counter.get_total_flops() > 0
        assert t.products >= 3 * (2 * 6 + 2)  # forward, input and weight gradients of 6 products per layer and more
        assert 0 < t.seconds < 1


def test_the_profile_puts_matmuls_and_the_optimizer_in_their_categories():
    prof = profile_step(_tiny_step("fp32"), steps=1, warmup=1)
    assert prof.ms["matmul"] > 0 and prof.ms[OPTIMIZER] > 0
    assert abs(sum(prof.shares().values()) - 1) < 0.01
    assert "matmul" in prof.format("tiny")


def test_operands_that_shared_memory_in_the_step_share_it_in_the_replay():
    from benchmarks.profile import MatmulReplay

    x, w = torch.randn(64, 32), torch.randn(48, 32)

    def step() -> None:  # w forward and transposed, x twice: two distinct storages, four operands
        torch.mm(x, w.t())
        torch.mm(torch.mm(x, w.t()), w)

    replay = MatmulReplay(step)
    (_, (a1, b1), _), (_, (a2, b2), _), (_, (_, b3), _) = replay.calls
    assert a1.data_ptr() == a2.data_ptr() and b1.data_ptr() == b2.data_ptr() == b3.data_ptr() != a1.data_ptr()
    assert b1.stride() == (1, 32) and b3.stride() == (32, 1)  # w's layouts: transposed, then as stored
    assert not torch.equal(a1, x)  # random values, not the step's
    # x, w, and the one intermediate product: not a copy per operand (6 operands, 3 storages)
    assert replay.bytes == 4 * (64 * 32 + 48 * 32 + 64 * 48)
