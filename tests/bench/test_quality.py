"""bench quality end to end at a tiny size: both pipelines train from the same raw text, every
checkpoint of both is scored on the same masked held-out inputs, and the JSON carries the ratio."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from benchmarks.quality import bench_quality, fast_tokenizer, heldout_windows, mean_curve, split_corpus, time_to_loss
from bertpipe.cli.main import build_parser
from tests.conftest import SAMPLE_FILES


@pytest.fixture
def one_thread(monkeypatch):
    """Tiny models gain nothing from 2 threads, and OpenMP threads crawl when other processes hold a core."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(n)


def test_both_sides_trained_and_scored_on_identical_held_out_inputs(tmp_path, one_thread):
    overrides = {"wordpiece": {"vocab_size": 600}, "pretrain": {"steps": 12, "batch_size": 8, "phase2_batch_size": 4}}
    res = bench_quality(tmp_path / "work", overrides=overrides, corpus=[str(p) for p in SAMPLE_FILES], eval_points=3,
                        eval_sequences=32, plot_path=tmp_path / "plot.png")
    json.dumps(res)  # the command prints it as its last line
    assert (tmp_path / "plot.png").stat().st_size > 0
    for k in ("time_to_hf_final_loss_ratio", "hf_final_loss", "ours_final_loss", "ours_data_s", "hf_data_s",
              "ours_time_to_hf_final_loss_s", "hf_time_to_hf_final_loss_s", "load_1min"):
        assert k in res
    assert res["steps"] == 12 and res["tokens_per_step"] == 8 * 64 and res["ours_data_s"] > 0 and res["hf_data_s"] > 0
    ours, hf = res["curve_ours"], res["curve_hf"]
    assert [q["step"] for q in ours] == [q["step"] for q in hf] == [4, 8, 12]
    for curve, total in ((ours, res["ours_total_s"]), (hf, res["hf_total_s"])):
        times = [q["time_s"] for q in curve]
        assert times == sorted(times) and 0 < times[-1] <= total
        assert all(q["predictions"] == res["heldout_predictions"] > 0 and 0 < q["mlm_loss"] < 10 for q in curve)
    # one masked input set, fed byte for byte to every checkpoint of both sides
    shas = res["heldout_sha256"]
    assert len(shas["ours"]) == 1 and shas["ours"] == shas["transformers"]
    assert res["hf_final_loss"] == hf[-1]["mlm_loss"] and hf[0]["time_s"] <= res["hf_time_to_hf_final_loss_s"] <= hf[-1]["time_s"]
    if res["time_to_hf_final_loss_ratio"] is None:
        assert min(q["mlm_loss"] for q in ours) > res["hf_final_loss"]
    else:
        assert res["time_to_hf_final_loss_ratio"] == pytest.approx(
            res["ours_time_to_hf_final_loss_s"] / res["hf_time_to_hf_final_loss_s"], rel=1e-2)


def test_several_training_seeds_are_compared_by_their_mean_curves(tmp_path, one_thread):
    overrides = {"wordpiece": {"vocab_size": 600}, "pretrain": {"steps": 8, "batch_size": 8, "phase2_batch_size": 4}}
    res = bench_quality(tmp_path / "work", overrides=overrides, corpus=[str(p) for p in SAMPLE_FILES], eval_points=2,
                        eval_sequences=16, train_seeds=[3, 4])
    by_seed = res["curves_by_seed"]
    assert res["train_seeds"] == [3, 4] and set(by_seed) == {3, 4}
    assert by_seed[3]["ours"][-1]["mlm_loss"] != by_seed[4]["ours"][-1]["mlm_loss"]  # the seed reached the training
    for side, key in (("ours", "curve_ours"), ("transformers", "curve_hf")):
        for i, q in enumerate(res[key]):
            assert q["mlm_loss"] == pytest.approx((by_seed[3][side][i]["mlm_loss"] + by_seed[4][side][i]["mlm_loss"]) / 2, abs=1e-4)
    assert res["hf_final_loss"] == pytest.approx(res["curve_hf"][-1]["mlm_loss"], abs=1e-4)
    assert res["final_loss_gap_by_seed"] == [pytest.approx(by_seed[s]["ours"][-1]["mlm_loss"] - by_seed[s]["transformers"][-1]["mlm_loss"],
                                                           abs=1e-3) for s in (3, 4)]
    assert len(res["heldout_sha256"]["ours"]) == 1 and res["heldout_sha256"]["ours"] == res["heldout_sha256"]["transformers"]


def test_the_mean_curve_averages_time_loss_and_accuracy_per_step():
    a = [{"step": 5, "time_s": 1.0, "mlm_loss": 4.0, "mlm_acc": 0.1, "predictions": 9}]
    b = [{"step": 5, "time_s": 3.0, "mlm_loss": 2.0, "mlm_acc": 0.3, "predictions": 9}]
    (m,) = mean_curve([a, b])
    assert m == {"step": 5, "time_s": 2.0, "mlm_loss": 3.0, "mlm_acc": pytest.approx(0.2), "predictions": 9}


def test_held_out_documents_are_in_neither_sides_training_files(tmp_path):
    train, held = split_corpus([str(p) for p in SAMPLE_FILES], tmp_path, 0.2, seed=3)
    assert held and split_corpus([str(p) for p in SAMPLE_FILES], tmp_path / "again", 0.2, seed=3)[1] == held
    with gzip.open(train[1], "rt", encoding="utf-8") as f:
        text = f.read() + open(train[0], encoding="utf-8").read()
    sotu = [json.loads(ln)["text"] for ln in gzip.open(SAMPLE_FILES[1], "rt", encoding="utf-8")]
    assert all(h not in text for h in held) and any(h in sotu for h in held) and any(h not in sotu for h in held)


def test_held_out_windows_are_masked_once_by_a_seeded_generator(tmp_path):
    vocab = tmp_path / "vocab.txt"
    words = "the of and a to in is was it that he she said".split()
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = fast_tokenizer(vocab, tmp_path / "tok")
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(3000)) for i in range(3)]
    a, b = heldout_windows(texts, tok, 32, 100, seed=5), heldout_windows(texts, tok, 32, 100, seed=5)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels) and a.input_ids.shape == (100, 32)
    masked = a.labels != -100
    assert not masked[:, [0, -1]].any() and 0.12 < masked.float().mean() < 0.18
    assert (a.input_ids[:, 0] == tok.cls_token_id).all() and (a.input_ids[:, -1] == tok.sep_token_id).all()
    assert 0.7 < (a.input_ids[masked] == tok.mask_token_id).float().mean() < 0.9


def test_time_to_loss_interpolates_between_checkpoints():
    pts = [{"time_s": 10.0, "mlm_loss": 6.0}, {"time_s": 20.0, "mlm_loss": 4.0}, {"time_s": 30.0, "mlm_loss": 3.0}]
    assert time_to_loss(pts, 5.0) == pytest.approx(15.0) and time_to_loss(pts, 3.0) == 30.0
    assert time_to_loss(pts, 7.0) == 10.0 and time_to_loss(pts, 2.0) is None


def test_the_command_is_wired():
    args = build_parser().parse_args(["bench", "quality", "--eval-points", "4", "--overrides", '{"pretrain": {"steps": 8}}'])
    assert args.func.__name__ == "_cmd_bench_quality" and args.eval_points == 4 and args.preset == "tiny-shared"
