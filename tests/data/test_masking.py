"""Masking against the reference rules: budget, candidates, split, whole words."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from bertpipe.data.masking import MaskingConfig, mask_batch, num_to_predict

V, MASK, CLS, SEP, PAD = 997, 4, 2, 3, 0
SPECIAL = np.array([PAD, 1, CLS, SEP, MASK])


def batch(rng: np.random.Generator, n: int = 4000, t: int = 61):
    lengths = rng.integers(5, t + 1, n)
    tokens = rng.integers(5, V, (n, t)).astype(np.int32)
    tokens[np.arange(t)[None, :] >= lengths[:, None]] = PAD
    tokens[:, 0] = CLS
    tokens[np.arange(n), lengths - 1] = SEP
    mid = np.maximum(1, lengths // 2)
    tokens[np.arange(n), mid] = SEP
    return tokens, lengths


def run(cfg, tokens, lengths, seed=0, is_subword=None):
    return mask_batch(tokens, lengths, cfg, np.random.default_rng(seed), vocab_size=V, mask_id=MASK,
                      special_ids=SPECIAL, is_subword=is_subword)


def test_budget_is_the_reference_formula():
    cfg = MaskingConfig(masked_lm_prob=0.15, max_predictions_per_seq=20)
    lengths = np.arange(1, 513)
    expected = [min(20, max(1, int(round(n * 0.15)))) for n in range(1, 513)]  # Python's round: half to even
    assert num_to_predict(lengths, cfg).tolist() == expected


@pytest.mark.parametrize("split", [(0.8, 0.1, 0.1), (1.0, 0.0, 0.0), (0.8, 0.0, 0.2), (0.8, 0.2, 0.0), (0.0, 0.2, 0.8), (0.0, 0.0, 1.0)])
def test_counts_candidates_and_split(split):
    rng = np.random.default_rng(1)
    tokens, lengths = batch(rng)
    cfg = MaskingConfig(mask_split=split)
    mb = run(cfg, tokens, lengths)
    n_cand = ((np.arange(tokens.shape[1])[None, :] < lengths[:, None]) & ~np.isin(tokens, SPECIAL)).sum(1)
    assert (mb.valid.sum(1) == np.minimum(num_to_predict(lengths, cfg), n_cand)).all()
    for row_pos, row_valid in zip(mb.positions[:200], mb.valid[:200]):
        assert list(row_pos[row_valid]) == sorted(row_pos[row_valid])
    rows = np.broadcast_to(np.arange(len(tokens))[:, None], mb.positions.shape)[mb.valid]
    p = mb.positions[mb.valid]
    original, new = tokens[rows, p], mb.input_ids[rows, p]
    assert not np.isin(original, SPECIAL).any(), "special tokens are never chosen"
    assert (mb.labels[mb.valid] == original).all()
    is_mask = new == MASK
    kept = new == original
    rnd = ~is_mask & ~kept
    observed = (is_mask.mean(), 1 - is_mask.mean() - kept.mean(), kept.mean())
    # a random draw can hit the original token (1/V) and counts as kept here
    for got, want in zip(observed, split):
        assert abs(got - want) <= 0.015, (observed, split)
    assert rnd.sum() == 0 if split[1] == 0 else rnd.any()
    untouched = np.ones_like(tokens, dtype=bool)
    untouched[rows, p] = False
    assert (mb.input_ids[untouched] == tokens[untouched]).all(), "only chosen positions change"


def test_every_candidate_is_equally_likely():
    tokens, lengths = batch(np.random.default_rng(2), n=20000, t=21)
    lengths[:] = 21
    tokens[:, 20] = SEP
    tokens[:, 1:20] = 7
    mb = run(MaskingConfig(masked_lm_prob=0.15), tokens, lengths, seed=3)
    hits = np.bincount(mb.positions[mb.valid], minlength=21)
    cand = hits[1:20][hits[1:20] > 0]
    assert hits[0] == 0 and hits[20] == 0
    assert cand.std() / cand.mean() < 0.05


def test_whole_word_masking_takes_all_pieces_of_a_word():
    rng = np.random.default_rng(4)
    tokens, lengths = batch(rng, n=3000)
    is_subword = np.zeros(V, dtype=bool)
    is_subword[500:] = True  # ids >= 500 are "##" continuation pieces
    mb = run(MaskingConfig(whole_word=True), tokens, lengths, is_subword=is_subword)
    cfg_budget = num_to_predict(lengths, MaskingConfig())
    assert (mb.valid.sum(1) <= cfg_budget).all()
    assert mb.valid.sum() > 0.8 * cfg_budget.sum()
    for i in range(500):
        chosen = set(mb.positions[i][mb.valid[i]].tolist())
        n = lengths[i]
        for j in range(1, n - 1):
            cand = tokens[i, j] not in SPECIAL
            cont = cand and is_subword[tokens[i, j]] and tokens[i, j - 1] not in SPECIAL
            if cont:  # a continuation piece is chosen exactly when the piece before it is
                assert (j in chosen) == (j - 1 in chosen), (i, j)


def test_split_must_sum_to_one():
    with pytest.raises(ValidationError, match="summing to 1"):
        MaskingConfig(mask_split=(0.8, 0.1, 0.2))
    with pytest.raises(ValidationError):
        MaskingConfig(mask_split=(1.2, -0.1, -0.1))
