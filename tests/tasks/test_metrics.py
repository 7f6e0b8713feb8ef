"""Tests for bertpipe.tasks.metrics: every expected figure is computed by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bertpipe.tasks.metrics import (
    accuracy,
    bio_spans,
    entity_scores,
    exact_match,
    f1_binary,
    macro_f1,
    matthews_corrcoef,
    normalize_answer,
    squad_f1,
    squad_scores,
)

approx = pytest.approx

# --------------------------------------------------------------------------- classification


def test_accuracy():
    # positions 0, 1, 3 agree -> 3/5
    assert accuracy([0, 1, 1, 0, 1], [0, 1, 0, 0, 0]) == approx(0.6)
    assert accuracy(np.array(["a", "b"]), np.array(["a", "b"])) == 1.0
    assert accuracy([1, 1], [0, 0]) == 0.0


def test_f1_binary_positive_class_matters():
    y_true = ["a", "a", "b", "b", "b"]
    y_pred = ["a", "b", "b", "b", "b"]
    # positive "a": tp=1 fp=0 fn=1 -> P=1, R=1/2, F1 = 2*1*0.5/1.5 = 2/3
    assert f1_binary(y_true, y_pred, positive="a") == approx(2 / 3)
    # positive "b": tp=3 fp=1 fn=0 -> P=3/4, R=1, F1 = 2*0.75/1.75 = 6/7
    assert f1_binary(y_true, y_pred, positive="b") == approx(6 / 7)


def test_f1_binary_default_positive_is_one():
    # tp=1 (idx 0), fp=1 (idx 3), fn=2 (idx 1, 2) -> P=1/2, R=1/3, F1 = 2*(1/6)/(5/6) = 0.4
    assert f1_binary([1, 1, 1, 0, 0], [1, 0, 0, 1, 0]) == approx(0.4)


def test_f1_binary_undefined_and_zero_cases():
    # no positive predicted and none true: 0/0 -> 0.0 by convention
    assert f1_binary([0, 0, 0], [0, 0, 0]) == 0.0
    # positives exist but none predicted: R=0 -> F1=0
    assert f1_binary([1, 0], [0, 0]) == 0.0
    # all predicted positive, none true: P=0 -> F1=0
    assert f1_binary([0, 0], [1, 1]) == 0.0


def test_macro_f1_three_classes():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    # class 0: tp=1 fp=1 fn=1 -> 2/4 = 1/2
    # class 1: tp=2 fp=1 fn=0 -> 4/5
    # class 2: tp=1 fp=0 fn=1 -> 2/3
    # mean = (15/30 + 24/30 + 20/30) / 3 = 59/90
    assert macro_f1(y_true, y_pred) == approx(59 / 90)


def test_macro_f1_counts_labels_only_predicted():
    # class 0: tp=1 fn=1 -> 2/3; class 1 (only predicted): tp=0 fp=1 -> 0; mean = 1/3
    assert macro_f1([0, 0], [0, 1]) == approx(1 / 3)


def test_mcc_binary_formula():
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    y_pred = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    # TP=3 FN=1 FP=1 TN=5
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (15-1)/sqrt(4*4*6*6) = 14/24 = 7/12
    assert matthews_corrcoef(y_true, y_pred) == approx(7 / 12)


def test_mcc_multiclass_gorodkin():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    # confusion (rows true): [[1,1,0],[0,2,0],[1,0,1]]; n=6, trace=4
    # t=(2,2,2), p=(2,3,1); cov = 4*6 - (4+6+2) = 12
    # n^2 - sum p^2 = 36 - 14 = 22; n^2 - sum t^2 = 36 - 12 = 24
    # MCC = 12 / sqrt(22*24) = 12 / sqrt(528)
    assert matthews_corrcoef(y_true, y_pred) == approx(12 / math.sqrt(528))


def test_mcc_extremes_and_undefined():
    assert matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1]) == approx(1.0)
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == approx(-1.0)
    # constant prediction: n^2 - sum p^2 = 16 - 16 = 0 -> undefined -> 0.0
    assert matthews_corrcoef([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0
    # a single class everywhere: also 0/0
    assert matthews_corrcoef([1, 1], [1, 1]) == 0.0


@pytest.mark.parametrize("fn", [accuracy, f1_binary, macro_f1, matthews_corrcoef])
def test_classification_input_errors(fn):
    with pytest.raises(ValueError, match="2 labels but y_pred has 1"):
        fn([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])


# --------------------------------------------------------------------------- SQuAD


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Cat!", "cat"),
        ("  An apple,  a DAY...  ", "apple day"),
        ("\tNew\n York ", "new york"),
        ("theater Anna", "theater anna"),  # articles only as whole words
        ("a.m.", "am"),  # punctuation goes first, so "a.m." is not the article "a"
        # order check: punctuation before articles -> "theend"; articles first would give "end"
        ("the-end", "theend"),
        ("café’s", "café’s"),  # only ASCII punctuation is removed, as in the official script
        ("The", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_exact_match():
    assert exact_match("The Cat!", ["cat"]) == 1.0
    assert exact_match("cats", ["cat"]) == 0.0
    assert exact_match("cat", ["dog", "The cat."]) == 1.0  # any ground truth


def test_squad_f1_partial():
    # "the big cat" -> [big, cat]; "a cat sat" -> [cat, sat]; overlap 1
    # P = 1/2, R = 1/2, F1 = 1/2
    assert squad_f1("the big cat", ["a cat sat"]) == approx(0.5)
    # [big, black, cat] vs [cat]: overlap 1, P=1/3, R=1 -> 2*(1/3)/(4/3) = 1/2
    assert squad_f1("big black cat", ["cat"]) == approx(0.5)
    assert squad_f1("dog", ["cat"]) == 0.0


def test_squad_f1_counts_repeated_tokens_as_multiset():
    # [cat,cat,cat] vs [cat,dog,cat]: multiset overlap min(3,2)=2 (a set overlap would be 1)
    # P = 2/3, R = 2/3, F1 = 2/3
    assert squad_f1("cat cat cat", ["cat dog cat"]) == approx(2 / 3)


def test_squad_f1_max_over_ground_truths():
    # vs "dog": 0; vs "the cat" -> [cat]: P=1/2 R=1 -> 2/3; vs "big black cat": P=1 R=2/3 -> 0.8
    assert squad_f1("big cat", ["dog", "the cat", "big black cat"]) == approx(0.8)
    assert squad_f1("big cat", ["dog", "the cat"]) == approx(2 / 3)


def test_squad_v2_unanswerable():
    # empty ground-truth list: gold is "", scores 1 only for an empty (normalized) prediction
    assert exact_match("", []) == 1.0
    assert squad_f1("", []) == 1.0
    assert exact_match("cat", []) == 0.0
    assert squad_f1("cat", []) == 0.0
    assert squad_f1("The.", []) == 1.0  # normalizes to "" as in the official v2 script
    # and the other way round: an empty prediction for an answerable question
    assert exact_match("", ["cat"]) == 0.0
    assert squad_f1("", ["cat"]) == 0.0


def test_squad_ground_truths_must_be_a_list():
    with pytest.raises(TypeError, match="list of strings"):
        squad_f1("cat", "cat")  # type: ignore[arg-type]


def test_squad_scores_percent_and_missing_predictions():
    answers = {"q1": ["cat"], "q2": ["big black cat"], "q3": [], "q4": ["dog"]}
    predictions = {"q1": "The cat", "q2": "big cat", "q3": "", "extra": "ignored"}
    # EM: q1 1, q2 0, q3 1 (v2 empty), q4 0 (no prediction) -> 2/4 = 50%
    # F1: q1 1, q2 [big,cat] vs [big,black,cat]: P=1 R=2/3 -> 0.8, q3 1, q4 0 -> 2.8/4 = 70%
    scores = squad_scores(predictions, answers)
    assert scores == {"exact_match": approx(50.0), "f1": approx(70.0)}
    with pytest.raises(ValueError, match="no questions"):
        squad_scores({"q": "x"}, {})


# --------------------------------------------------------------------------- tagging


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        # entity at sentence end is closed
        (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
        (["O", "B-LOC", "I-LOC"], {("LOC", 1, 3)}),
        # I- without B- starts an entity (after O, and at sentence start)
        (["O", "I-PER", "I-PER", "O"], {("PER", 1, 3)}),
        (["I-ORG"], {("ORG", 0, 1)}),
        # adjacent B-X B-X: two entities
        (["B-PER", "B-PER"], {("PER", 0, 1), ("PER", 1, 2)}),
        (["B-PER", "I-PER", "B-PER"], {("PER", 0, 2), ("PER", 2, 3)}),
        # type switch inside I- tags ends one entity and starts another
        (["B-PER", "I-PER", "I-LOC", "I-LOC"], {("PER", 0, 2), ("LOC", 2, 4)}),
        (["I-PER", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 2)}),
        (["B-PER", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 2)}),
        # O ends an entity; all-O and empty sequences have none
        (["B-MISC", "O", "O"], {("MISC", 0, 1)}),
        (["O", "O", "O"], set()),
        ([], set()),
        # BIOES: S- single, B..E, an E- after O opens and closes a one-token entity
        (
            ["S-PER", "B-LOC", "I-LOC", "E-LOC", "O", "E-ORG"],
            {("PER", 0, 1), ("LOC", 1, 4), ("ORG", 5, 6)},
        ),
        # an I- after E- of the same type starts a new entity
        (["B-LOC", "E-LOC", "I-LOC"], {("LOC", 0, 2), ("LOC", 2, 3)}),
        (["S-PER", "S-PER"], {("PER", 0, 1), ("PER", 1, 2)}),
        # untyped tags (conlleval gives them type ""): I after O still opens an entity
        (["O", "I", "I", "O", "B"], {("", 1, 3), ("", 4, 5)}),
    ],
)
def test_bio_spans(tags, expected):
    assert bio_spans(tags) == expected


@pytest.mark.parametrize("bad", ["PER", "X-PER", "O-PER"])
def test_bio_spans_rejects_malformed_tags(bad):
    with pytest.raises(ValueError, match="malformed tag"):
        bio_spans(["O", bad])


TRUE = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "O"]]  # 3 entities


def test_entity_scores_perfect():
    assert entity_scores(TRUE, [list(s) for s in TRUE]) == {
        "precision": 1.0,
        "recall": 1.0,
        "entity_f1": 1.0,
    }


def test_entity_scores_one_missing_entity():
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O"]]
    # correct 2, predicted 2, true 3 -> P = 1, R = 2/3, F1 = 2*(2/3)/(5/3) = 0.8
    s = entity_scores(TRUE, pred)
    assert s == {"precision": approx(1.0), "recall": approx(2 / 3), "entity_f1": approx(0.8)}


def test_entity_scores_boundary_and_spurious_entities():
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-MISC", "B-ORG", "O"]]
    # predicted: (PER,0,1) wrong end, (LOC,3,4) ok, (MISC,0,1) spurious, (ORG,1,2) ok
    # correct 2, predicted 4, true 3 -> P = 1/2, R = 2/3, F1 = (2/3)/(7/6) = 4/7
    s = entity_scores(TRUE, pred)
    assert s == {"precision": approx(0.5), "recall": approx(2 / 3), "entity_f1": approx(4 / 7)}


def test_entity_scores_type_must_match():
    # same span, wrong type: nothing correct -> P = R = 0, F1 = 0
    s = entity_scores([["B-PER", "I-PER"]], [["B-LOC", "I-LOC"]])
    assert s == {"precision": 0.0, "recall": 0.0, "entity_f1": 0.0}


def test_entity_scores_i_without_b_matches_gold():
    # conlleval reads I-PER I-PER as the entity (PER,0,2), equal to B-PER I-PER
    assert entity_scores([["B-PER", "I-PER"]], [["I-PER", "I-PER"]])["entity_f1"] == 1.0


def test_entity_scores_all_o_is_zero_not_nan():
    s = entity_scores([["O", "O"]], [["O", "O"]])
    assert s == {"precision": 0.0, "recall": 0.0, "entity_f1": 0.0}
    # predictions but no gold entities: P = 0/1 = 0, R = 0/0 -> 0
    s = entity_scores([["O"]], [["B-PER"]])
    assert s == {"precision": 0.0, "recall": 0.0, "entity_f1": 0.0}


def test_entity_scores_length_errors_name_the_sentence():
    with pytest.raises(ValueError, match="sentence 1: 3 true tags but 2 predicted"):
        entity_scores(TRUE, [TRUE[0], ["O", "B-ORG"]])
    with pytest.raises(ValueError, match="2 true sentences but 1 predicted"):
        entity_scores(TRUE, [TRUE[0]])


def test_classification_agrees_with_sklearn_on_random_labels():
    # independent reference, when scikit-learn happens to be installed (not a dependency)
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        t, p = rng.integers(0, k, 200), rng.integers(0, k, 200)
        p[:80] = t[:80]  # some signal, so MCC is not ~0
        assert accuracy(t, p) == approx(skm.accuracy_score(t, p))
        assert f1_binary(t, p) == approx(skm.f1_score(t == 1, p == 1))
        assert macro_f1(t, p) == approx(skm.f1_score(t, p, average="macro"))
        assert matthews_corrcoef(t, p) == approx(skm.matthews_corrcoef(t, p))
