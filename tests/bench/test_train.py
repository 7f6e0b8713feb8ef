"""``bertpipe bench train --size``: the real sizes' shapes and weights, the run end to end on a
shrunken shape (one step, one repetition), and the flag reaching the benchmark. No timings are
checked: the benchmark prints figures, it asserts nothing."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from benchmarks.realsize import SIZES, VARIANTS, RealSize, bench_real_size, build_sides, real_size
from bertpipe.model.bert import BertConfig


def test_base_is_bert_base_at_dropout_0_1_with_its_fixed_counts():
    size = real_size("base")
    cfg = size.cfg
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size, cfg.vocab_size) \
        == (12, 768, 12, 3072, 30522)
    assert cfg.hidden_dropout_prob == cfg.attention_probs_dropout_prob == 0.1 and size.state is None
    assert (size.steps, size.repeats) == (SIZES["base"].steps, SIZES["base"].repeats)
    assert (real_size("base", steps=1, repeats=2).steps, real_size("base", steps=1, repeats=2).repeats) == (1, 2)
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        real_size("huge")


def test_minilm_runs_on_its_published_weights_on_both_sides():
    import transformers

    size = real_size("minilm")
    cfg = size.cfg
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size, cfg.vocab_size) \
        == (6, 384, 12, 1536, 30522)
    assert cfg.hidden_dropout_prob == 0.1 and size.state is not None
    sides = build_sides(size, torch.device("cpu"))
    assert isinstance(sides.hf, transformers.BertForPreTraining)
    assert sides.at_init and all(k.startswith("cls.") for k in sides.at_init)  # MiniLM ships no pretraining heads
    published = size.state["bert.encoder.layer.3.intermediate.dense.weight"]
    assert torch.equal(sides.ours.state_dict()["bert.encoder.layer.3.intermediate.dense.weight"], published)
    hf_state = sides.hf.state_dict()
    for k, v in sides.ours.state_dict().items():  # every weight, the heads at init included, is the same on both sides
        assert torch.equal(hf_state[k], v), k
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, cfg.vocab_size, (2, 16), generator=g)
    types, mask = torch.zeros_like(ids), torch.ones_like(ids)
    sides.ours.eval()
    sides.hf.eval()
    with torch.no_grad():
        ours = sides.ours(ids, types, mask)
        theirs = sides.hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
    assert torch.allclose(ours.mlm_logits, theirs.prediction_logits, atol=1e-4)
    assert torch.allclose(ours.nsp_logits, theirs.seq_relationship_logits, atol=1e-5)


def test_a_shrunken_size_runs_end_to_end_and_prints_its_counts_and_the_json_fields(capsys):
    cfg = BertConfig(vocab_size=211, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    result = bench_real_size(RealSize("test", "a shrunken shape", cfg, None, steps=1, repeats=1), profile=True)
    out = capsys.readouterr().out
    assert "counts: 1 timed steps x 1 alternating repetitions" in out and "repetition 1/1" in out and "goal (issue 27" in out
    assert json.loads(json.dumps(result)) == result  # the CLI prints it as the last line
    for k in VARIANTS:
        assert result[f"{k}_tokens_per_s"] > 0 and k in out and sum(result[f"profile_{k}"].values()) == pytest.approx(1, abs=0.01)
    for key in ("mfu_fp32", "mfu_bf16", "mfu_ceiling_fp32", "mfu_ceiling_bf16", "ratio_vs_hf_fp32", "ratio_vs_hf_bf16",
                "peak_tflops_fp32", "peak_tflops_bf16", "hfu_hf_bf16"):
        assert result[key] > 0, key
    assert result["ratio_vs_hf_bf16"] == pytest.approx(result["ours_bf16_tokens_per_s"] / result["hf_bf16_tokens_per_s"], abs=0.006)
    assert (result["layers"], result["hidden"], result["batch"], result["seq"], result["dropout"]) == (2, 32, 32, 128, 0.1)
    assert (result["steps"], result["repeats"]) == (1, 1) and set(result["goal"]["met"]) == {"bf16_share_of_ceiling", "bf16_ratio_vs_hf"}


def _parse(*argv: str) -> argparse.Namespace:
    from bertpipe.cli.bench import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", "train", *argv])


def test_the_size_flag_reaches_the_benchmark_and_small_stays_the_default(monkeypatch, capsys):
    import benchmarks.train

    calls = []
    monkeypatch.setattr(benchmarks.train, "bench_train", lambda **kw: calls.append(kw) or {"ok": 1})
    for argv in ((), ("--size", "base"), ("--size", "minilm", "--steps", "2", "--repeats", "1")):
        args = _parse(*argv)
        args.func(args)
    assert [(c["size"], c["steps"], c["repeats"]) for c in calls] == [("small", None, None), ("base", None, None), ("minilm", 2, 1)]
    assert capsys.readouterr().out.splitlines()[-1] == '{"ok": 1}'
    with pytest.raises(SystemExit, match="small size only"):
        args = _parse("--size", "base", "--compile")
        args.func(args)
    with pytest.raises(SystemExit):
        _parse("--size", "huge")
