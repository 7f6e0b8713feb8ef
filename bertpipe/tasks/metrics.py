"""Evaluation metrics for the fine-tuning tasks: classification, SQuAD QA and entity tagging.

Purpose: give ``bertpipe finetune`` the figures the paper and GLUE/SQuAD/CoNLL report, under
the names written to ``metrics.json`` (``accuracy``, ``f1``, ``mcc``, ``exact_match``,
``entity_f1``), with the reference tools' semantics, in plain Python/NumPy.

* Classification -- :func:`accuracy`, :func:`f1_binary`, :func:`macro_f1` and
  :func:`matthews_corrcoef` (Gorodkin's multi-class R_K, equal to the usual binary MCC for
  two classes). Where a ratio is 0/0 the score is 0.0, as scikit-learn's default
  ``zero_division`` gives (without its warning).
* Extractive QA -- :func:`normalize_answer`, :func:`exact_match`, :func:`squad_f1` and
  :func:`squad_scores` follow the official SQuAD v1.1 ``evaluate-v1.1.py``: lower-case,
  drop ASCII punctuation, drop the articles a/an/the, collapse whitespace (in that order);
  token F1 from a multiset overlap; the max over ground truths; percentages over all
  questions, an unanswered one scoring 0. SQuAD v2 unanswerable questions (an empty
  ground-truth list) are scored against the empty string. Empty token lists follow the
  official v2 script: F1 is 1 when both prediction and gold normalize to nothing, else 0
  (v1.1 would give 0 even then; the case only arises for answers made of articles and
  punctuation, e.g. ``"The"``).
* Tagging -- :func:`bio_spans` and :func:`entity_scores` follow ``conlleval``: chunk starts
  and ends are decided from (previous tag, tag) pairs exactly as its ``startOfChunk`` /
  ``endOfChunk``, so an ``I-X`` after ``O`` or after another type opens an entity, and
  BIOES tags (``E-``/``S-``) are read as well. Scores are micro-averaged over entities; a
  predicted entity counts only with the exact span and type.

Trade-offs: no scikit-learn / seqeval dependency (both are small, but these figures must not
change when a third-party default does); NumPy is used only for the confusion matrix, the
rest is pure Python and linear in the input. Scores are fractions in [0, 1] except
:func:`squad_scores`, which reports percent like the official script.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

__all__ = [
    "accuracy",
    "bio_spans",
    "entity_scores",
    "exact_match",
    "f1_binary",
    "macro_f1",
    "matthews_corrcoef",
    "normalize_answer",
    "squad_f1",
    "squad_scores",
]

Labels = Sequence[Hashable] | np.ndarray
Span = tuple[str, int, int]


# --------------------------------------------------------------------------- classification


def _check_pair(y_true: Labels, y_pred: Labels) -> tuple[list[Hashable], list[Hashable]]:
    t, p = list(np.asarray(y_true).tolist()), list(np.asarray(y_pred).tolist())
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    if not t:
        raise ValueError("no labels to score (empty y_true and y_pred)")
    return t, p


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den else 0.0


def accuracy(y_true: Labels, y_pred: Labels) -> float:
    """Fraction of positions where the prediction equals the label."""
    t, p = _check_pair(y_true, y_pred)
    return sum(a == b for a, b in zip(t, p, strict=True)) / len(t)


def _f1_for(t: list[Hashable], p: list[Hashable], positive: Hashable) -> float:
    tp = sum(a == positive and b == positive for a, b in zip(t, p, strict=True))
    fp = sum(a != positive and b == positive for a, b in zip(t, p, strict=True))
    fn = sum(a == positive and b != positive for a, b in zip(t, p, strict=True))
    # 2PR/(P+R) == 2tp/(2tp+fp+fn); the latter is defined whenever either P or R is.
    return _ratio(2 * tp, 2 * tp + fp + fn)


def f1_binary(y_true: Labels, y_pred: Labels, positive: Hashable = 1) -> float:
    """F1 of the ``positive`` class (the MRPC/QQP "F1").

    0.0 when it is undefined: no positive predicted and none true (tp = fp = fn = 0).
    """
    t, p = _check_pair(y_true, y_pred)
    return _f1_for(t, p, positive)


def macro_f1(y_true: Labels, y_pred: Labels) -> float:
    """Unweighted mean of per-class F1 over every label seen in ``y_true`` or ``y_pred``."""
    t, p = _check_pair(y_true, y_pred)
    labels = list(dict.fromkeys(t + p))
    return sum(_f1_for(t, p, c) for c in labels) / len(labels)


def matthews_corrcoef(y_true: Labels, y_pred: Labels) -> float:
    """Matthews correlation (Gorodkin's R_K for more than two classes); 0.0 when undefined.

    With confusion matrix C (rows true, columns predicted), n = sum(C), c = trace(C),
    t_k = row sums, p_k = column sums::

        MCC = (c*n - sum_k p_k t_k) / sqrt((n^2 - sum_k p_k^2) * (n^2 - sum_k t_k^2))

    The denominator is 0 when all labels or all predictions are one class; then 0.0.
    """
    t, p = _check_pair(y_true, y_pred)
    index = {c: i for i, c in enumerate(dict.fromkeys(t + p))}
    conf = np.zeros((len(index), len(index)), dtype=np.float64)
    np.add.at(conf, ([index[a] for a in t], [index[b] for b in p]), 1.0)
    n, c = conf.sum(), np.trace(conf)
    t_k, p_k = conf.sum(axis=1), conf.sum(axis=0)
    cov = c * n - float(p_k @ t_k)
    den = (n * n - float(p_k @ p_k)) * (n * n - float(t_k @ t_k))
    return float(cov / np.sqrt(den)) if den > 0 else 0.0


# --------------------------------------------------------------------------- SQuAD

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """The official SQuAD normalization: lower, remove punctuation, articles, extra spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _golds(ground_truths: Sequence[str]) -> Sequence[str]:
    if isinstance(ground_truths, str):
        raise TypeError("ground_truths must be a list of strings, not a single string")
    return ground_truths if len(ground_truths) else [""]  # SQuAD v2 unanswerable


def _token_f1(prediction: str, gold: str) -> float:
    pred_toks, gold_toks = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_toks or not gold_toks:
        return float(pred_toks == gold_toks)
    same = sum((Counter(pred_toks) & Counter(gold_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, ground_truths: Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized ground truth, else 0.0.

    An empty ``ground_truths`` (unanswerable) means the gold is ``""``.
    """
    norm = normalize_answer(prediction)
    return float(any(norm == normalize_answer(g) for g in _golds(ground_truths)))


def squad_f1(prediction: str, ground_truths: Sequence[str]) -> float:
    """Max over ground truths of the token-level F1 of the normalized strings."""
    return max(_token_f1(prediction, g) for g in _golds(ground_truths))


def squad_scores(predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """``{"exact_match", "f1"}`` in percent over every question in ``answers``.

    A question without a prediction scores 0 on both (also when it is unanswerable: the
    official script counts it as wrong); predictions for unknown ids are ignored.
    """
    if not answers:
        raise ValueError("no questions to score (answers is empty)")
    em = f1 = 0.0
    for qid, golds in answers.items():
        if qid in predictions:
            em += exact_match(predictions[qid], golds)
            f1 += squad_f1(predictions[qid], golds)
    return {"exact_match": 100.0 * em / len(answers), "f1": 100.0 * f1 / len(answers)}


# --------------------------------------------------------------------------- tagging


def _split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``; a bare ``"B"`` has type ``""``."""
    prefix, sep, typ = tag.partition("-")
    if prefix not in {"B", "I", "E", "S", "O"} or (prefix == "O" and sep):
        raise ValueError(f"malformed tag {tag!r}: expected 'O' or B-/I-/E-/S- followed by a type")
    return prefix, typ


def _chunk_end(prev: str, tag: str, prev_type: str, typ: str) -> bool:
    # conlleval endOfChunk
    return (
        prev in {"E", "S"}
        or (prev in {"B", "I"} and tag in {"B", "S", "O"})
        or (prev != "O" and prev_type != typ)
    )


def _chunk_start(prev: str, tag: str, prev_type: str, typ: str) -> bool:
    # conlleval startOfChunk
    return (
        tag in {"B", "S"}
        or (prev in {"E", "S", "O"} and tag in {"E", "I"})
        or (tag != "O" and prev_type != typ)
    )


def bio_spans(tags: Sequence[str]) -> set[Span]:
    """Entities ``(type, start, end_exclusive)`` of a BIO/BIOES tag sequence, as conlleval reads it.

    ``I-X`` after ``O`` or after a different type starts an entity; a type change ends the
    previous one; ``O``, ``B-``, ``S-`` and the end of the sequence close an open entity.
    """
    spans: set[Span] = set()
    prev, prev_type, start = "O", "", -1
    for i, tag in enumerate([*tags, "O"]):
        cur, typ = _split_tag(tag)
        if start >= 0 and _chunk_end(prev, cur, prev_type, typ):
            spans.add((prev_type, start, i))
            start = -1
        if _chunk_start(prev, cur, prev_type, typ):
            start = i
        prev, prev_type = cur, typ
    return spans


def entity_scores(true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged entity precision, recall and F1 (``entity_f1``), fractions in [0, 1].

    An entity is correct only with the same type, start and end. Each ratio is 0.0 when its
    denominator is 0. Sentences must pair up one to one and have equal lengths.
    """
    if len(true_seqs) != len(pred_seqs):
        raise ValueError(f"{len(true_seqs)} true sentences but {len(pred_seqs)} predicted")
    correct = n_true = n_pred = 0
    for i, (t, p) in enumerate(zip(true_seqs, pred_seqs, strict=True)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} true tags but {len(p)} predicted tags")
        gold, guess = bio_spans(t), bio_spans(p)
        correct += len(gold & guess)
        n_true += len(gold)
        n_pred += len(guess)
    precision, recall = _ratio(correct, n_pred), _ratio(correct, n_true)
    return {
        "precision": precision,
        "recall": recall,
        "entity_f1": _ratio(2 * precision * recall, precision + recall),
    }
