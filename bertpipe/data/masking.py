"""Masked-LM masking, vectorized over a batch; one implementation for static and dynamic use.

Static masking calls ``mask_batch`` while shards are written (a fresh mask per dupe pass);
dynamic masking calls it on each batch as it is loaded (a fresh mask per epoch). Both get
an explicit ``numpy.random.Generator``.

The rules are the reference's (create_pretraining_data.py):
- ``num_to_predict = min(max_predictions_per_seq, max(1, round(len(tokens) * masked_lm_prob)))``
  where ``len`` counts ``[CLS]``/``[SEP]``; Python's and NumPy's ``round`` both round half
  to even.
- Special tokens are never candidates. Candidates are chosen uniformly without replacement
  (random keys + argsort, equivalent to the reference's shuffle-and-take).
- Each chosen position becomes ``[MASK]`` with probability ``split.mask``, stays unchanged
  with ``split.keep``, and otherwise becomes a token drawn uniformly from the whole
  vocabulary (as in the reference and HF's collator).
- Whole-word masking groups a ``##`` piece with the candidate right before it and takes
  words in random order, skipping a word that would overflow the budget; the replacement
  draw stays per piece. (The reference also glues a ``##`` piece that starts segment B to
  the last word of A; we start a new word there.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator


class MaskingConfig(BaseModel):
    """What is predicted and how it is hidden. Defaults are BERT's."""

    model_config = ConfigDict(extra="forbid")

    masked_lm_prob: float = Field(0.15, gt=0.0, lt=1.0, description="fraction of tokens to predict")
    # 20 at length 128 (BERT); use ~80 at length 512. Caps round(len * masked_lm_prob).
    max_predictions_per_seq: int = Field(20, ge=1, description="cap on predictions per sequence")
    mask_split: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="probabilities of [MASK] / random token / unchanged for a chosen token; must sum to 1"
    )
    whole_word: bool = Field(False, description="mask all WordPieces of a word together")
    # The reference (create_pretraining_data.py) excludes only [CLS] and [SEP]: [UNK] positions are
    # predicted too, which matters with an imported vocabulary, where [UNK] is common.
    mask_unk: bool = Field(True, description="[UNK] positions may be chosen, as in the reference; false excludes them")

    def fingerprint_fields(self) -> dict[str, Any]:
        """The fields as fingerprinted: ``mask_unk`` at its default is left out, so shards and
        pretrainings named before the option existed keep their names."""
        return self.model_dump(mode="json", exclude={"mask_unk"} if self.mask_unk else set())

    @field_validator("mask_split")
    @classmethod
    def _split_sums_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(p < 0 for p in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"mask_split {v} must be three non-negative probabilities summing to 1 (mask, random, keep)")
        return v


@dataclass
class MaskedBatch:
    input_ids: np.ndarray  # (n, T) int32, with replacements applied
    positions: np.ndarray  # (n, P) int64, sorted; padded with 0 where not valid
    labels: np.ndarray  # (n, P) int32, original ids; -100 where not valid
    valid: np.ndarray  # (n, P) bool
    kind: np.ndarray  # (n, P) int8: 0 [MASK], 1 random, 2 kept, -1 not valid


def num_to_predict(lengths: np.ndarray, cfg: MaskingConfig) -> np.ndarray:
    return np.minimum(cfg.max_predictions_per_seq, np.maximum(1, np.round(lengths * cfg.masked_lm_prob))).astype(np.int64)


def mask_batch(
    tokens: np.ndarray,
    lengths: np.ndarray,
    cfg: MaskingConfig,
    rng: np.random.Generator,
    *,
    vocab_size: int,
    mask_id: int,
    special_ids: np.ndarray,
    is_subword: np.ndarray | None = None,
    unk_id: int | None = None,
) -> MaskedBatch:
    """Mask a right-padded (n, T) batch whose rows have the given lengths. ``special_ids`` are never
    chosen, except ``unk_id`` when ``cfg.mask_unk``."""
    if cfg.mask_unk and unk_id is not None:
        special_ids = special_ids[special_ids != unk_id]
    n, t = tokens.shape
    p = cfg.max_predictions_per_seq
    pos = np.arange(t)
    in_seq = pos[None, :] < lengths[:, None]  # (n, T)
    is_special = np.zeros(max(int(tokens.max(initial=0)), int(special_ids.max())) + 1, dtype=bool)
    is_special[special_ids] = True
    cand = in_seq & ~is_special[tokens]  # (n, T)
    k = np.minimum(num_to_predict(lengths, cfg), cand.sum(1))  # (n,)
    if cfg.whole_word:
        if is_subword is None:
            raise ValueError("whole-word masking needs the vocabulary's subword table")
        positions, valid = _left_align(_choose_whole_words(tokens, cand, k, is_subword, rng), p)
    else:
        keys = rng.random((n, t), dtype=np.float32)  # float32: half the draws' cost, ties negligible
        keys[~cand] = 2.0
        # a row's k smallest keys are a uniform random k-subset of its candidates
        width = min(p, t)
        if width < t:
            part = np.argpartition(keys, width - 1, axis=1)[:, :width]  # (n, P'): the P' smallest, unordered
            order = np.take_along_axis(part, np.argsort(np.take_along_axis(keys, part, axis=1), axis=1), axis=1)
        else:
            order = np.argsort(keys, axis=1)
        valid = np.arange(p)[None, :] < k[:, None]  # (n, P); k <= min(P, candidates)
        order = np.pad(order, ((0, 0), (0, p - width)))
        positions = np.sort(np.where(valid, order, t), axis=1)  # chosen positions ascending, then t
        positions[~valid] = 0
    return _apply(tokens, positions, valid, cfg, rng, vocab_size, mask_id)


def _left_align(chosen: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, T) bool → ascending positions left-aligned in (n, P), and their validity."""
    n = len(chosen)
    rows_nz, cols_nz = np.nonzero(chosen)  # row-major: positions ascending within each row
    counts = np.bincount(rows_nz, minlength=n)
    rank = np.arange(len(rows_nz)) - np.repeat(np.cumsum(counts) - counts, counts)
    positions = np.zeros((n, p), dtype=np.int64)
    positions[rows_nz, rank] = cols_nz
    return positions, np.arange(p)[None, :] < counts[:, None]


def _choose_whole_words(tokens: np.ndarray, cand: np.ndarray, k: np.ndarray, is_subword: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, t = tokens.shape
    cont = cand & is_subword[tokens]
    cont[:, 1:] &= cand[:, :-1]  # a ## piece continues a word only right after a candidate
    cont[:, 0] = False
    starts = cand & ~cont
    word = np.cumsum(starts, axis=1) - 1  # (n, T) word index within the row
    n_words = starts.sum(1)
    w = int(n_words.max()) if n else 0
    if w == 0:
        return np.zeros_like(cand)
    wlen = np.zeros((n, w), dtype=np.int64)  # pieces per word
    rows = np.broadcast_to(np.arange(n)[:, None], (n, t))
    np.add.at(wlen, (rows[cand], word[cand]), 1)
    keys = rng.random((n, w))
    keys[np.arange(w)[None, :] >= n_words[:, None]] = 2.0
    order = np.argsort(keys, axis=1, kind="stable")  # (n, W) words in random order
    shuffled = np.take_along_axis(wlen, order, axis=1)
    taken_sorted = np.zeros((n, w), dtype=bool)
    count = np.zeros(n, dtype=np.int64)
    for j in range(w):  # greedy over words, all rows at once
        fits = (count < k) & (count + shuffled[:, j] <= k) & (shuffled[:, j] > 0)
        taken_sorted[:, j] = fits
        count += np.where(fits, shuffled[:, j], 0)
    taken = np.zeros((n, w), dtype=bool)
    np.put_along_axis(taken, order, taken_sorted, axis=1)
    return cand & np.take_along_axis(taken, np.maximum(word, 0), axis=1)


def _apply(tokens: np.ndarray, positions: np.ndarray, valid: np.ndarray, cfg: MaskingConfig, rng: np.random.Generator,
           vocab_size: int, mask_id: int) -> MaskedBatch:
    n = len(tokens)
    p = cfg.max_predictions_per_seq
    labels = np.where(valid, np.take_along_axis(tokens, positions, axis=1), -100).astype(np.int32)
    u = rng.random((n, p), dtype=np.float32)
    m, r, _ = cfg.mask_split
    kind = np.where(u < m, 0, np.where(u < m + r, 1, 2)).astype(np.int8)
    kind[~valid] = -1
    random_ids = rng.integers(0, vocab_size, size=(n, p), dtype=np.int64)
    out = tokens.astype(np.int32, copy=True)
    rows = np.broadcast_to(np.arange(n)[:, None], (n, p))
    sel = kind == 0
    out[rows[sel], positions[sel]] = mask_id
    sel = kind == 1
    out[rows[sel], positions[sel]] = random_ids[sel]
    return MaskedBatch(out, positions.astype(np.int64), labels, valid, kind)
