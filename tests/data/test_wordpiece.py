"""WordPiece: training on documents and faithful import of an existing BERT vocab.txt."""

from __future__ import annotations

import json

import pytest
from tokenizers import BertWordPieceTokenizer

from bertpipe.data.wordpiece import (
    SPECIAL_TOKENS,
    WordPieceConfig,
    load_vocab,
    train_wordpiece,
)
from tests.conftest import minilm_dir

SENTENCES = [
    "The Martians landed at Horsell Common, near Woking, in 1898.",
    "Fellow-Citizens of the Senate and House of Representatives: I congratulate you!",
    "Naïve café owners in Zürich don't re-tokenize „quotes“ — or do they?",
    "東京 and 北京 are split per character; emojis 🙂 become [UNK].",
    "UNBELIEVABLE supercalifragilisticexpialidocious wordpieces##inside",
    "   tabs\tand\u00a0odd\u200bspaces   ",
]


def test_trained_vocab_has_bert_layout(sample_tok):
    vocab_lines = (sample_tok.path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab_lines[:5] == SPECIAL_TOKENS
    assert len(vocab_lines) == sample_tok.manifest["counts"]["vocab_size"] <= 3001
    assert any(t.startswith("##") for t in vocab_lines)
    v = load_vocab(sample_tok.path)
    assert (v.pad_id, v.cls_id, v.sep_id, v.mask_id) == (0, 2, 3, 4)
    assert v.is_subword.sum() == sum(t.startswith("##") for t in vocab_lines)
    enc = v.tokenizer.encode("The Martians came.", "They were large.")
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2
    assert enc.type_ids[-1] == 1 and enc.type_ids[0] == 0


def test_retraining_gives_the_same_vocabulary_and_the_cache_pins_it(sample_docs, sample_tok, tmp_path):
    """The plain trainer's order depends on hash-map iteration (tokenizers#1794); ours must not."""
    again = train_wordpiece(sample_docs.path, WordPieceConfig(vocab_size=3001), tmp_path)
    assert not again.cached and again.fingerprint == sample_tok.fingerprint
    assert (again.path / "vocab.txt").read_bytes() == (sample_tok.path / "vocab.txt").read_bytes()
    reused = train_wordpiece(sample_docs.path, WordPieceConfig(vocab_size=3001), tmp_path)
    assert reused.cached and (reused.path / "vocab.txt").read_bytes() == (again.path / "vocab.txt").read_bytes()


def test_registered_continuation_tokens_are_not_special(sample_tok):
    """The ``##x`` tokens registered for determinism are plain vocabulary: text "##x" is not matched whole."""
    added = json.loads((sample_tok.path / "tokenizer.json").read_text())["added_tokens"]
    assert sorted(t["content"] for t in added) == sorted(SPECIAL_TOKENS)
    v = load_vocab(sample_tok.path)
    assert "##e" in v.tokenizer.get_vocab()
    tokens = v.tokenizer.encode("a##e", add_special_tokens=False).tokens
    assert "##e" not in tokens and tokens[0] == "a" and tokens[-1] == "e"  # "#" is punctuation: its own word


@pytest.mark.parametrize("cased", [False])
def test_imported_vocab_tokenizes_exactly_like_bert(tmp_path, cased):
    vocab_file = minilm_dir() / "vocab.txt"
    res = train_wordpiece(None, WordPieceConfig(vocab_file=vocab_file, cased=cased), tmp_path)
    ours = load_vocab(res.path)
    ref = BertWordPieceTokenizer(str(vocab_file), lowercase=not cased)
    assert ours.size == ref.get_vocab_size() == 30522
    assert (ours.cls_id, ours.sep_id, ours.mask_id, ours.pad_id) == (101, 102, 103, 0)
    for a, b in zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1], strict=True):
        mine, theirs = ours.tokenizer.encode(a, b), ref.encode(a, b)
        assert mine.ids == theirs.ids
        assert mine.type_ids == theirs.type_ids


def test_imported_vocab_matches_transformers_python_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab_file = minilm_dir() / "vocab.txt"
    ours = load_vocab(train_wordpiece(None, WordPieceConfig(vocab_file=vocab_file), tmp_path).path)
    slow = transformers.BertTokenizer(str(vocab_file), do_lower_case=True)
    for s in SENTENCES:
        assert ours.tokenizer.encode(s).ids == slow(s)["input_ids"], s


def test_bad_vocab_files_are_clear_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        train_wordpiece(None, WordPieceConfig(vocab_file=missing), tmp_path / "o")
    dup = tmp_path / "dup.txt"
    dup.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nthe\n")
    with pytest.raises(ValueError, match=r"dup.txt:7: token 'the' repeats line 6"):
        train_wordpiece(None, WordPieceConfig(vocab_file=dup), tmp_path / "o")
    nospecial = tmp_path / "ns.txt"
    nospecial.write_text("[PAD]\n[UNK]\nthe\n")
    with pytest.raises(ValueError, match="lacks special tokens"):
        train_wordpiece(None, WordPieceConfig(vocab_file=nospecial), tmp_path / "o")
    assert not any(p.name[0].isalnum() and p.is_dir() for p in (tmp_path / "o").iterdir())
