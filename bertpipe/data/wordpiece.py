"""Stage 2, WordPiece: train a BERT vocabulary on the documents, or import a ``vocab.txt``.

Both routes produce the same artefacts in ``<out>/<fingerprint>/``: ``tokenizer.json``
(HF ``tokenizers``: BERT normalizer, pre-tokenizer, WordPiece model and the
``[CLS] A [SEP] B [SEP]`` post-processor), a BERT-format ``vocab.txt`` (one token per line,
line number = id) and ``manifest.json`` with the special-token ids.

Training uses ``tokenizers``' Rust WordPiece trainer (2-4 MB of text per second here) fed
by a streaming iterator over the document Parquet, so the corpus is never loaded whole.
Importing wraps an existing vocabulary (e.g. bert-base-uncased's) in the same BERT
normalization, so text is tokenized exactly as the original BERT tokenizer does; whether
to lowercase must match how that vocabulary was built (``--cased`` for cased vocabularies).

Determinism: ``tokenizers``' trainer creates the continuing-subword tokens (``##e``) in
hash-map order and breaks ties between equally frequent merges by token id
(huggingface/tokenizers#1794), so two plain trainings on the same text differ: here, in 1
of 4,000 tokens and in the ids of 58. Training therefore runs twice: the first pass only
finds the ``##`` single characters (vocabulary size 1: the initial tokens, no merges), the
second registers them up front in sorted order, so every id, and with it every tie, is
decided the same way each time. The cost is a second read of the corpus by the (Rust,
multi-MB/s) trainer. The registered tokens are then ordinary vocabulary
entries: the saved tokenizer is rebuilt from ``vocab.txt``, so only BERT's five specials
are special. Vocabularies cached before this change were one draw of the plain trainer;
they keep their fingerprints (``VERSION`` is unchanged), as their draw is as valid as any.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.processors import TemplateProcessing

from bertpipe.core.fingerprint import hash_file
from bertpipe.core.stage import Stage, StageResult, run_stage
from bertpipe.core.stagedir import read_manifest, resolve_stage_dir

STAGE = "wordpiece"
VERSION = 1
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class WordPieceConfig(BaseModel):
    """Vocabulary options. With ``vocab_file`` set, training options are ignored."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(30522, ge=len(SPECIAL_TOKENS) + 1, description="target vocabulary size (BERT: 30522)")
    cased: bool = Field(False, description="keep case and accents (BERT-cased); default lowercases and strips accents")
    # Splitting CJK ideographs into single characters is what BERT does for all its vocabularies.
    split_cjk: bool = Field(True, description="put spaces around CJK ideographs so each is its own token")
    min_frequency: int = Field(2, ge=1, description="minimum pair frequency for a merge")
    # BERT's vocab keeps ~1000 base characters; rarer characters become [UNK].
    limit_alphabet: int = Field(1000, ge=1, description="maximum number of initial characters kept")
    vocab_file: Path | None = Field(None, description="import this BERT vocab.txt instead of training")


@dataclass(frozen=True)
class Vocab:
    """What later stages need from a tokenizer directory."""

    tokenizer: Tokenizer
    size: int
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    is_subword: np.ndarray  # (V,) bool: token starts with "##" (continues the previous word)

    @property
    def special_ids(self) -> np.ndarray:
        return np.array([self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id], dtype=np.int32)


def _bert_tokenizer(vocab: str | dict[str, int] | None, cfg: WordPieceConfig) -> BertWordPieceTokenizer:
    return BertWordPieceTokenizer(
        vocab,
        unk_token="[UNK]",
        clean_text=True,
        handle_chinese_chars=cfg.split_cjk,
        strip_accents=None if not cfg.cased else False,  # None: follow lowercase, as BERT does
        lowercase=not cfg.cased,
    )


def _train(docs_dir: Path, cfg: WordPieceConfig, registered: list[str]) -> BertWordPieceTokenizer:
    """One pass of the trainer; ``registered`` tokens take the first ids, in this order."""
    tok = _bert_tokenizer(None, cfg)
    tok.train_from_iterator(iter_sentences(docs_dir), vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                            limit_alphabet=cfg.limit_alphabet, special_tokens=registered, show_progress=True)
    return tok


def iter_sentences(docs_dir: Path, batch_rows: int = 256) -> Iterator[list[str]]:
    """Batches of sentences from every document Parquet part, in order."""
    for part in sorted(docs_dir.glob("part-*.parquet")):
        for batch in pq.ParquetFile(part).iter_batches(batch_size=batch_rows, columns=["sentences"]):
            for sentences in batch.column(0).to_pylist():
                yield sentences


class WordPieceStage(Stage[WordPieceConfig]):
    """Documents → vocabulary (or an imported ``vocab.txt``); one unit, the training itself."""

    name, version = STAGE, VERSION

    def __init__(self, cfg: WordPieceConfig, docs: str | Path | None) -> None:
        super().__init__(cfg)
        if cfg.vocab_file is None and docs is None:
            raise ValueError("the wordpiece stage needs a documents directory or cfg.vocab_file")
        self.docs = resolve_stage_dir(docs, "ingest") if cfg.vocab_file is None else None

    @classmethod
    def fingerprint_config(cls, cfg: WordPieceConfig) -> dict[str, Any]:
        if cfg.vocab_file is not None:  # an imported vocabulary depends on the file and the normalization only
            return cfg.model_dump(mode="json", include={"cased", "split_cjk"})
        return cfg.model_dump(mode="json", exclude={"vocab_file"})

    @classmethod
    def fingerprint_of(cls, cfg: WordPieceConfig, upstream: list[str]) -> str:
        """``upstream``: the documents' fingerprint; an imported vocabulary replaces it with its file's hash."""
        if cfg.vocab_file is not None:
            if not Path(cfg.vocab_file).is_file():
                raise FileNotFoundError(f"vocab file {cfg.vocab_file} does not exist")
            upstream = [hash_file(cfg.vocab_file)]
        return super().fingerprint_of(cfg, upstream)

    def upstream(self) -> list[str]:
        if self.cfg.vocab_file is not None:
            return [hash_file(self.cfg.vocab_file)]
        return [read_manifest(self.docs)["fingerprint"]]

    def plan(self, out: Path) -> list[Path]:
        return [out]

    def run_unit(self, out: Path) -> dict[str, Any]:
        tok = self._import(out) if self.cfg.vocab_file is not None else self._train(out)
        ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
        if missing := [t for t, i in ids.items() if i is None]:
            raise ValueError(f"vocabulary lacks special tokens {missing}")
        tok.post_processor = TemplateProcessing(  # BERT's [CLS] A [SEP] B [SEP], type ids 0/1
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
        )
        tok.save(str(out / "tokenizer.json"))
        return {"vocab_size": tok.get_vocab_size(), "special_ids": ids}

    def _import(self, out: Path) -> BertWordPieceTokenizer:
        tokens = _read_vocab_file(Path(self.cfg.vocab_file))
        if missing := [t for t in SPECIAL_TOKENS if t not in tokens]:
            raise ValueError(f"{self.cfg.vocab_file}: vocabulary lacks special tokens {missing}")
        shutil.copyfile(self.cfg.vocab_file, out / "vocab.txt")
        return _bert_tokenizer({t: i for i, t in enumerate(tokens)}, self.cfg)

    def _train(self, out: Path) -> BertWordPieceTokenizer:
        alphabet = _train(self.docs, self.cfg.model_copy(update={"vocab_size": 1}), SPECIAL_TOKENS)  # initial tokens only
        continuing = sorted(t for t in alphabet.get_vocab() if t.startswith("##") and len(t) == 3)
        vocab = _train(self.docs, self.cfg, SPECIAL_TOKENS + continuing).get_vocab()
        ordered = sorted(vocab, key=vocab.__getitem__)
        (out / "vocab.txt").write_text("".join(t + "\n" for t in ordered), encoding="utf-8")
        return _bert_tokenizer({t: i for i, t in enumerate(ordered)}, self.cfg)  # only BERT's five tokens special

    def publish(self, out: Path, reports: list[dict[str, Any]]) -> dict[str, Any]:
        (report,) = reports
        return {"config": self.fingerprint_config(self.cfg), "upstream": self.upstream(),
                "counts": {"vocab_size": report["vocab_size"]}, "special_ids": report["special_ids"],
                "imported": self.cfg.vocab_file is not None}


def train_wordpiece(docs_dir: Path | None, cfg: WordPieceConfig, out_root: Path) -> StageResult:
    """Train (or import) a vocabulary into ``out_root/<fingerprint>/``; reuse a complete output there."""
    return run_stage(WordPieceStage(cfg, docs_dir), out_root)


def _read_vocab_file(path: Path) -> list[str]:
    try:
        tokens = [ln.rstrip("\n").rstrip("\r") for ln in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: vocab.txt is not UTF-8 (byte offset {e.start})") from None
    if not tokens:
        raise ValueError(f"{path}: empty vocab file")
    seen: dict[str, int] = {}
    for i, t in enumerate(tokens):
        if t in seen:
            raise ValueError(f"{path}:{i + 1}: token {t!r} repeats line {seen[t] + 1}")
        seen[t] = i
    return tokens


def load_vocab(tok_dir: Path) -> Vocab:
    """Load a wordpiece stage output (directory or root with ``latest``)."""
    tok_dir = resolve_stage_dir(tok_dir, STAGE)
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    tokens = (tok_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    ids = read_manifest(tok_dir)["special_ids"]
    return Vocab(
        tokenizer=tok,
        size=tok.get_vocab_size(),
        pad_id=ids["[PAD]"],
        unk_id=ids["[UNK]"],
        cls_id=ids["[CLS]"],
        sep_id=ids["[SEP]"],
        mask_id=ids["[MASK]"],
        is_subword=np.array([t.startswith("##") for t in tokens], dtype=bool),
    )
