"""Fine-tuning task data: readers for GLUE-style TSV, SQuAD JSON and CoNLL files, and the tokenization that turns
their examples into fixed-length arrays for the task heads.

Readers return dataclasses carrying the file and 1-based line they came from. Bad data raises ``TaskDataError`` (a
``ValueError``) whose message starts ``<file>:<line>:`` and names the field: wrong column count, unknown label, answer
text not at its ``answer_start`` (SQuAD files are one line: the question id is named), a CoNLL line that is not
``token tag``, an empty file. Trade-offs:

* Files are read whole: fine-tuning sets are small (largest shared file 3.2 MB, GLUE MNLI ~100 MB), and whole reads
  give exact line numbers cheaply.
* TSV quoting is disabled (``csv.QUOTE_NONE`` semantics, ``"`` is text: GLUE files hold unbalanced quotes). Rows are
  split on tabs directly, not by the ``csv`` module, so no field-size limit applies and a row is exactly one line;
  lines split on ``\\n`` only (``str.splitlines`` also breaks at U+2028, ``\\x0c``, ...).
* Labels stay the file's strings (``"0"``, ``"entailment"``); ``float_labels=True`` parses numbers for regression.
  Label ids come from ``label_vocab`` (sorted); eval files are checked against the training labels.
* Encoders assemble ``[CLS] A [SEP] B [SEP]`` (type ids 0, then 1) from pieces encoded without special tokens, so
  truncation is BERT's and a tokenizer's own truncation/padding (a ``tokenizer.json`` may carry 128) never applies.

Truncation rules, and how the encoders lay out their arrays:

* ``encode_pairs``: longest-first, one piece at a time, as BERT's ``_truncate_seq_pair`` (ties trim B), to
  ``max_len - 3`` pieces (``max_len - 2`` for single sentences); ``truncated`` marks the rows cut.
* ``encode_tags``: pieces past ``max_len - 2`` are dropped; a word whose first piece is dropped has no prediction
  (``words_cut`` counts them; decode them as ``O``). A word yielding no piece at all (every character removed by
  BERT's cleaning, e.g. U+FFFD) is encoded as ``[UNK]``, so every word keeps a labelled position.
* ``encode_squad``: the question is cut to ``max_query_len`` pieces; the context is split into windows of
  ``max_len - len(question) - 3`` pieces starting ``doc_stride`` apart (BERT's ``run_squad.py`` meaning: the step
  between windows, not HF's overlap).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

IGNORE_INDEX = -100  # label of positions that take no loss (specials, non-first pieces, padding)
PairLayout = Literal["mrpc", "qnli", "rte", "mnli", "auto"]
# (text A, text B, label) column names; "auto" tries the layouts in this order.
PAIR_LAYOUTS: dict[str, list[tuple[str, str, str]]] = {
    "mnli": [("sentence1", "sentence2", "gold_label")],
    "mrpc": [("#1 String", "#2 String", "Quality")],
    "qnli": [("question", "sentence", "label"), ("sentence1", "sentence2", "label")],
    "rte": [("sentence1", "sentence2", "label"), ("question", "sentence", "label")],
}


class TaskDataError(ValueError):
    """Bad task data; the message names the file, the 1-based line and the field."""


@dataclass
class TextExample:
    text_a: str
    text_b: str | None
    label: str | float
    line: int
    source: str = ""


@dataclass
class QAExample:
    qid: str
    question: str
    context: str
    answers: list[tuple[str, int]]  # (text, character start in context); empty: unanswerable
    line: int | None = None
    source: str = ""


@dataclass
class TagExample:
    tokens: list[str]
    tags: list[str]
    line: int  # line of the first token; token i is on line + i
    source: str = ""


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) for every line; error on an empty (all-blank) file."""
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    out = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        try:
            out.append((n, raw.decode("utf-8").removesuffix("\r")))
        except UnicodeDecodeError as e:
            raise TaskDataError(f"{path}:{n}: not UTF-8 (byte {e.start} of the line)") from None
    if not any(text.strip() for _, text in out):
        raise TaskDataError(f"{path}: empty file")
    return out


def _read_tsv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    (_, head), *body = _lines(path)
    header = head.split("\t")
    rows = []
    for n, text in body:
        if not text:  # blank lines (a trailing one, or stray ones) hold no row
            continue
        fields = text.split("\t")
        if len(fields) != len(header):
            raise TaskDataError(
                f"{path}:{n}: wrong column count: expected {len(header)} ({', '.join(header)}), got {len(fields)}"
            )
        rows.append((n, fields))
    if not rows:
        raise TaskDataError(f"{path}: no examples (header only)")
    return header, rows


def _label(path: Path, n: int, col: str, raw: str, float_labels: bool) -> str | float:
    if not raw:
        raise TaskDataError(f"{path}:{n}: {col}: empty label")
    if not float_labels:
        return raw
    try:
        if math.isfinite(value := float(raw)):
            return value
    except ValueError:
        pass
    raise TaskDataError(f"{path}:{n}: {col}: label {raw!r} is not a finite number")


def _text_examples(path: Path, header: list[str], rows: list[tuple[int, list[str]]],
                   cols: tuple[str, str | None, str], float_labels: bool) -> list[TextExample]:
    missing = [c for c in cols if c is not None and c not in header]
    if missing:
        raise TaskDataError(f"{path}:1: header lacks column(s) {missing} (has {header})")
    ia, ib, il = (-1 if c is None else header.index(c) for c in cols)
    label = cols[2]
    return [TextExample(f[ia], None if ib < 0 else f[ib], _label(path, n, label, f[il], float_labels), n, str(path))
            for n, f in rows]


def read_single_tsv(path: str | Path, text_col: str = "sentence", label_col: str = "label", *,
                    float_labels: bool = False) -> list[TextExample]:
    """Single-sentence task with a header row (SST-2 ``sentence\\tlabel``, Fine Food)."""
    path = Path(path)
    header, rows = _read_tsv(path)
    return _text_examples(path, header, rows, (text_col, None, label_col), float_labels)


def read_pair_tsv(path: str | Path, layout: PairLayout = "auto", *, float_labels: bool = False) -> list[TextExample]:
    """Sentence-pair task: MRPC (``Quality``, ``#1 String``, ``#2 String``), QNLI/RTE (``question``/``sentence`` or
    ``sentence1``/``sentence2`` + ``label``), MNLI (``sentence1``, ``sentence2``, ``gold_label``); ``auto`` picks the
    first layout the header satisfies."""
    path = Path(path)
    if layout != "auto" and layout not in PAIR_LAYOUTS:
        raise ValueError(f"unknown pair layout {layout!r}; one of {['auto', *PAIR_LAYOUTS]}")
    header, rows = _read_tsv(path)
    candidates = [c for name in ([layout] if layout != "auto" else PAIR_LAYOUTS) for c in PAIR_LAYOUTS[name]]
    for cols in candidates:
        if all(c in header for c in cols):
            return _text_examples(path, header, rows, cols, float_labels)
    wanted = " or ".join("/".join(c) for c in candidates)
    raise TaskDataError(f"{path}:1: header {header} does not fit layout {layout!r} (needs columns {wanted})")


def read_squad(path: str | Path) -> list[QAExample]:
    """SQuAD v1.1 JSON (v2's ``is_impossible`` questions get empty ``answers``); every answer is checked:
    ``context[answer_start:answer_start + len(text)] == text``."""
    path = Path(path)
    text = "\n".join(t for _, t in _lines(path))
    def need(obj: object, key: str, typ: type, where: str):  # noqa: ANN202
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, typ) or isinstance(value, bool):
            raise TaskDataError(f"{path}: {where}: field {key!r} missing or not {typ.__name__}")
        return value

    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise TaskDataError(f"{path}:{e.lineno}: invalid JSON at column {e.colno}: {e.msg}") from None
    out: list[QAExample] = []
    seen: set[str] = set()
    for i, article in enumerate(need(doc, "data", list, "top level")):
        for j, para in enumerate(need(article, "paragraphs", list, f"data[{i}]")):
            where = f"data[{i}].paragraphs[{j}]"
            context = need(para, "context", str, where)
            for k, qa in enumerate(need(para, "qas", list, where)):
                qid = need(qa, "id", str, f"{where}.qas[{k}]")
                at = f"question {qid!r}"
                if qid in seen:
                    raise TaskDataError(f"{path}: {at}: id: repeats an earlier question id")
                seen.add(qid)
                answers: list[tuple[str, int]] = []
                if not qa.get("is_impossible", False):
                    for a in need(qa, "answers", list, at):
                        ans, start = need(a, "text", str, at), need(a, "answer_start", int, at)
                        found = context[start:start + len(ans)] if start >= 0 else ""
                        if found != ans or not ans:
                            raise TaskDataError(f"{path}: {at}: answer_start {start}: answer text {ans!r} "
                                                f"is not there; the context has {found!r} at that offset")
                        answers.append((ans, start))
                    if not answers:
                        raise TaskDataError(f"{path}: {at}: answers: empty, and the question is not is_impossible")
                out.append(QAExample(qid, need(qa, "question", str, at), context, answers, None, str(path)))
    if not out:
        raise TaskDataError(f"{path}: no questions")
    return out


def read_conll(path: str | Path) -> list[TagExample]:
    """CoNLL: ``token\\ttag`` (or ``token tag``) lines, a blank line between sentences, ``-DOCSTART-`` skipped."""
    path = Path(path)
    out: list[TagExample] = []
    tokens, tags, first = list[str](), list[str](), 0
    for n, text in [*_lines(path), (-1, "")]:  # sentinel blank line flushes the last sentence
        fields = [] if not text.strip() else text.split("\t") if "\t" in text else text.split()
        if not fields or fields[0] == "-DOCSTART-":
            if tokens:
                out.append(TagExample(tokens, tags, first, str(path)))
            tokens, tags = [], []
            continue
        if len(fields) != 2 or not all(fields):
            raise TaskDataError(f"{path}:{n}: token/tag mismatch: expected 2 non-empty fields (token, tag), "
                                f"got {len(fields)}: {fields}")
        first = first if tokens else n
        tokens.append(fields[0])
        tags.append(fields[1])
    if not out:
        raise TaskDataError(f"{path}: no sentences")
    return out


def label_vocab(examples: Sequence[TextExample | TagExample], known: list[str] | None = None) -> list[str]:
    """Sorted labels (tags for ``TagExample``) of ``examples``. With ``known`` (the training labels) every label must
    be among them, and ``known`` is returned unchanged (its order is the trained model's id order)."""
    known_set = set(known) if known is not None else None
    seen: set[str] = set()
    for ex in examples:
        if isinstance(ex, TagExample):
            labelled = [(t, ex.line + i) for i, t in enumerate(ex.tags)]
        elif isinstance(ex.label, float):
            raise TaskDataError(f"{ex.source}:{ex.line}: label: {ex.label} is a number (regression); no vocabulary")
        else:
            labelled = [(ex.label, ex.line)]
        for lab, n in labelled:
            if known_set is not None and lab not in known_set:
                raise TaskDataError(f"{ex.source}:{n}: label: unknown label {lab!r} "
                                    f"(the training labels are {sorted(known_set)})")
            seen.add(lab)
    return list(known) if known is not None else sorted(seen)


def _plain(tok: Tokenizer) -> Tokenizer:
    """``tok``, or a copy without its own truncation/padding (ours apply instead)."""
    if tok.truncation is None and tok.padding is None:
        return tok
    tok = Tokenizer.from_str(tok.to_str())
    tok.no_truncation(), tok.no_padding()
    return tok


def _special(tok: Tokenizer, name: str) -> int:
    i = tok.token_to_id(name)
    if i is None:
        raise ValueError(f"tokenizer vocabulary lacks {name}")
    return i


def _blank(n: int, max_len: int, pad: int) -> dict[str, np.ndarray]:
    if max_len < 3:
        raise ValueError(f"max_len {max_len} leaves no room for [CLS] A [SEP] B [SEP]")
    return {"input_ids": np.full((n, max_len), pad, np.int32), "token_type_ids": np.zeros((n, max_len), np.int8),
            "attention_mask": np.zeros((n, max_len), np.int8)}


def _put(arrays: dict[str, np.ndarray], row: int, first: list[int], second: list[int]) -> None:
    """Row ``row`` := ``first`` (type id 0) + ``second`` (type id 1), specials included."""
    ids = first + second
    arrays["input_ids"][row, : len(ids)] = ids
    arrays["token_type_ids"][row, len(first) : len(ids)] = 1
    arrays["attention_mask"][row, : len(ids)] = 1


def encode_pairs(tok: Tokenizer, examples: Sequence[TextExample], max_len: int,
                 labels: list[str] | None = None) -> dict[str, np.ndarray]:
    """``[CLS] A [SEP] (B [SEP])`` rows padded to ``max_len``. With ``labels`` (a ``label_vocab``) the result has
    ``labels`` ids into it; number labels always come back as float32 ``labels``."""
    tok = _plain(tok)
    cls, sep, pad = (_special(tok, t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    rows = _blank(len(examples), max_len, pad)
    with_b = [i for i, e in enumerate(examples) if e.text_b is not None]
    enc_b = tok.encode_batch([examples[i].text_b or "" for i in with_b], add_special_tokens=False)
    b_ids = {i: e.ids for i, e in zip(with_b, enc_b)}
    truncated = np.zeros(len(examples), bool)
    for i, enc in enumerate(tok.encode_batch([e.text_a for e in examples], add_special_tokens=False)):
        a, b = enc.ids, b_ids.get(i)
        la, lb = len(a), len(b) if b is not None else 0
        budget = max_len - (3 if b is not None else 2)
        truncated[i] = la + lb > budget
        while la + lb > budget:  # BERT's _truncate_seq_pair: trim the longer one, ties trim B
            la, lb = (la - 1, lb) if la > lb else (la, lb - 1)
        _put(rows, i, [cls, *a[:la], sep], [] if b is None else [*b[:lb], sep])
    out = rows | {"truncated": truncated}
    if any(isinstance(e.label, float) for e in examples):
        out["labels"] = np.array([e.label for e in examples], np.float32)
    elif labels is not None:
        index = {lab: k for k, lab in enumerate(label_vocab(examples, labels))}
        out["labels"] = np.array([index[e.label] for e in examples], np.int64)
    return out


def encode_tags(tok: Tokenizer, examples: Sequence[TagExample], labels: list[str],
                max_len: int) -> dict[str, np.ndarray]:
    """Pre-tokenized words to WordPieces. ``labels`` holds the tag id on the FIRST piece of each word, ``IGNORE_INDEX``
    elsewhere; ``word_ids`` maps positions to words (-1: specials, padding) so predictions map back to words. Each
    distinct word is encoded once: the pieces of ``encode(words, is_pretokenized=True)``, which also goes per word."""
    tok = _plain(tok)
    cls, sep, pad, unk = (_special(tok, t) for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]"))
    tag_id = {t: k for k, t in enumerate(label_vocab(examples, labels))}
    words = sorted({w for e in examples for w in e.tokens})
    pieces = {w: e.ids or [unk] for w, e in zip(words, tok.encode_batch(words, add_special_tokens=False))}
    out = _blank(len(examples), max_len, pad) | {
        "labels": np.full((len(examples), max_len), IGNORE_INDEX, np.int64),
        "word_ids": np.full((len(examples), max_len), -1, np.int32),
        "words_cut": np.zeros(len(examples), np.int32),
    }
    for i, ex in enumerate(examples):
        per_word = [pieces[w] for w in ex.tokens]
        ids = [t for p in per_word for t in p]
        wids = [w for w, p in enumerate(per_word) for _ in p]
        labs = [IGNORE_INDEX if j else tag_id[t] for t, p in zip(ex.tags, per_word) for j in range(len(p))]
        keep = max_len - 2
        if len(ids) > keep:
            ids, wids, labs = ids[:keep], wids[:keep], labs[:keep]
            out["words_cut"][i] = len(ex.tokens) - (wids[-1] + 1 if wids else 0)
        _put(out, i, [cls, *ids, sep], [])
        out["labels"][i, 1 : len(ids) + 1] = labs
        out["word_ids"][i, 1 : len(ids) + 1] = wids
    return out


def _window_starts(n: int, span: int, stride: int) -> list[int]:
    """BERT's doc spans: ``span`` pieces, starts ``stride`` apart, the last ending at ``n`` (one, empty, if n == 0)."""
    starts, start = [], 0
    while True:
        starts.append(start)
        if start + span >= n:
            return starts
        start += min(span, stride)


def encode_squad(tok: Tokenizer, examples: Sequence[QAExample], max_len: int = 384, doc_stride: int = 128,
                 max_query_len: int = 64) -> dict[str, np.ndarray]:
    """One feature per context window: ``[CLS] question [SEP] window [SEP]``.

    ``start_positions``/``end_positions``: the first/last pieces overlapping the first answer's characters, or 0
    (``[CLS]``) when the answer is not wholly inside the window or there is none. ``offsets`` (features, max_len, 2):
    each context piece's character span in its context, -1 elsewhere, so ``context[offsets[s, 0]:offsets[e, 1]]`` is a
    predicted answer. ``max_context``: the window where a piece has the most context on both sides (BERT scores a
    piece only there). ``example_index``: each feature's example."""
    if doc_stride < 1 or max_len < max_query_len + 4:
        raise ValueError(f"need doc_stride >= 1 and max_len >= max_query_len + 4 (got {doc_stride}, {max_len})")
    tok = _plain(tok)
    cls, sep, pad = (_special(tok, t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    questions = [q.ids[:max_query_len]
                 for q in tok.encode_batch([e.question for e in examples], add_special_tokens=False)]
    contexts = tok.encode_batch([e.context for e in examples], add_special_tokens=False)
    spans = [max_len - len(q) - 3 for q in questions]
    starts = [_window_starts(len(c.ids), span, doc_stride) for c, span in zip(contexts, spans)]
    n = sum(map(len, starts))
    out = _blank(n, max_len, pad) | {
        "start_positions": np.zeros(n, np.int32), "end_positions": np.zeros(n, np.int32),
        "offsets": np.full((n, max_len, 2), -1, np.int32), "max_context": np.zeros((n, max_len), bool),
        "example_index": np.repeat(np.arange(len(examples), dtype=np.int32), [len(s) for s in starts]),
    }
    f = 0
    for ex, q, c, span, wins in zip(examples, questions, contexts, spans, starts):
        offs = np.array(c.offsets, np.int32).reshape(-1, 2)
        answer: tuple[int, int] | None = None
        if ex.answers:
            text, a0 = ex.answers[0]
            hit = np.nonzero((offs[:, 0] < a0 + len(text)) & (offs[:, 1] > a0))[0]
            answer = (int(hit[0]), int(hit[-1])) if len(hit) else None
        # BERT's _check_is_max_context: score = min(left, right context) + 0.01 * window length; first best wins
        best, owner = np.full(len(c.ids), -1.0), np.zeros(len(c.ids), np.int32)
        for w, s in enumerate(wins):
            p = np.arange(min(span, len(c.ids) - s))
            score = np.minimum(p, len(p) - 1 - p) + 0.01 * len(p)
            better = score > best[s : s + len(p)]
            best[s : s + len(p)][better], owner[s : s + len(p)][better] = score[better], w
        k = len(q) + 2  # position of the first context piece
        for w, s in enumerate(wins):
            e = min(s + span, len(c.ids))
            _put(out, f, [cls, *q, sep], [*c.ids[s:e], sep])
            out["offsets"][f, k : k + e - s] = offs[s:e]
            out["max_context"][f, k : k + e - s] = owner[s:e] == w
            if answer and s <= answer[0] and answer[1] < e:
                out["start_positions"][f], out["end_positions"][f] = answer[0] - s + k, answer[1] - s + k
            f += 1
    return out
