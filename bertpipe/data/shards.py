"""Stage 3, shards: documents + vocabulary → NSP/SOP pairs, masked, in Parquet shards.

Documents are grouped, in corpus order, into *blocks* of about ``block_chars`` characters;
each block is tokenized, sampled ``dupe_factor`` times (fresh pairs and masks per pass),
shuffled, and written as one shard. Blocks are the unit of parallelism and of randomness
(``Generator([seed, block, pass])``), so shards are byte-identical whatever the number of
worker processes, and memory per worker is bounded by the block size, not the corpus.
A ``eval_fraction`` of documents (chosen by a seeded hash) goes to separate held-out shards.

Shard schema (schema version 1; Parquet, zstd, ``rows_per_group`` rows per row group):

| column | type | meaning |
|---|---|---|
| ``input_ids`` | list<int32> | ``[CLS] A [SEP] B [SEP]`` (``[CLS] text [SEP]`` in ``none`` mode); masked when static |
| ``segment_split`` | int16 | index of the first segment-B token; token_type_ids = position >= segment_split |
| ``next_sentence_label`` | int8 | nsp: 1 = random next; sop: 1 = swapped; none: -1 |
| ``masked_positions`` | list<int16> | static only: ascending positions to predict |
| ``masked_ids`` | list<int32> | static only: original ids at those positions |

Plus ``manifest.json`` (schema, config, fingerprint, vocabulary facts, counts, sha256 per
shard) and ``_COMPLETE``. Each shard is written to a temporary name and renamed; the whole
directory is published by one rename (``bertpipe.core.stage.run_stage``).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tokenizers.normalizers import BertNormalizer

from bertpipe.core.fingerprint import sha256_file
from bertpipe.core.stage import MapUnits, Stage, StageResult, run_stage
from bertpipe.core.stagedir import commit_file, read_manifest, resolve_stage_dir
from bertpipe.data.masking import MaskingConfig, mask_batch
from bertpipe.data.mixture import SourceShare, copies, rates, sample_rows, source_of
from bertpipe.data.pairs import Block, Instances, NspMode, Pack, sample_pairs, stream_tokens
from bertpipe.data.wordpiece import Vocab, load_vocab

STAGE = "shards"
VERSION = 1
SCHEMA_VERSION = 1


class ShardsConfig(BaseModel):
    """Pair sampling and masking. Defaults are google-research/bert's, except dupe_factor."""

    model_config = ConfigDict(extra="forbid")

    max_seq_length: int = Field(128, ge=8, le=8192, description="tokens per sequence including [CLS]/[SEP]")
    short_seq_prob: float = Field(0.1, ge=0.0, le=1.0, description="probability of a shorter random target length")
    short_seq_per_instance: bool = Field(
        False, description="draw the short target per instance (the reference draws it once per document pass)"
    )
    # The reference's default is 10; its README's example (and our default) is 5.
    dupe_factor: int = Field(5, ge=1, description="passes over the corpus, each with fresh pairs and masks")
    nsp_mode: NspMode = Field("nsp", description="nsp (BERT), sop (ALBERT sentence order), none (RoBERTa full sentences)")
    # "tokens" fills every sequence (cuts inside sentences, as run_mlm.py's group_texts): about
    # 1.2x the masked predictions per step of "sentences" on speech-length sentences.
    pack: Pack = Field("sentences", description="nsp_mode none only: cut the stream at sentence ends (RoBERTa) or every max_seq_length - 2 tokens")
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    # Empty: every training document once, as in the corpus (bertpipe.data.mixture).
    sources: list[SourceShare] = Field([], description="a mixture: named sources of the training text with weights "
                                       "(target shares of training tokens), by up- or down-sampling documents")
    dynamic: bool = Field(False, description="store unmasked ids; mask when batches are loaded (fresh mask each epoch)")
    seed: int = Field(12345, description="random seed (the reference's default)")
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of documents held out into eval-*.parquet shards")
    # ~2 MB of text ≈ 0.5M WordPieces: ~20 MB of working memory per worker at dupe_factor 5.
    block_chars: int = Field(2_000_000, ge=1000, description="characters of documents per block (one shard per block)")
    rows_per_group: int = Field(4096, ge=64, description="rows per Parquet row group")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, description="parallel processes (output does not depend on it)")

    @model_validator(mode="after")
    def _fits(self) -> ShardsConfig:
        if self.masking.max_predictions_per_seq > self.max_seq_length:
            raise ValueError("max_predictions_per_seq cannot exceed max_seq_length")
        if len({s.name for s in self.sources}) < len(self.sources):
            raise ValueError(f"source names repeat: {[s.name for s in self.sources]}")
        if self.pack == "tokens" and self.nsp_mode != "none":
            raise ValueError(f"pack 'tokens' needs nsp_mode 'none' (got {self.nsp_mode!r}): sentence pairs cut at sentence ends")
        return self

    def fingerprint_fields(self) -> dict[str, Any]:
        """Output-affecting fields; ``pack`` at its default is left out, so shards named before
        the option existed keep their names."""
        exclude = {"workers"} | ({"pack"} if self.pack == "sentences" else set()) | ({"sources"} if not self.sources else set())
        return self.model_dump(mode="json", exclude=exclude) | {"masking": self.masking.fingerprint_fields()}


@dataclass(frozen=True)
class BlockJob:
    index: int
    split: Literal["train", "eval"]
    pieces: tuple[tuple[str, tuple[int, ...]], ...]  # (docs part file, row indices; a row repeats when up-sampled)
    tok_dir: str
    bert_clean: bool  # the documents come from ingest's BERT-compatible cleaning
    cfg: ShardsConfig
    out: str
    sources: tuple[str, ...] = ()  # with a mixture: each row's source name, in the pieces' order
    # the paths (pieces, tok_dir, out) are absolute, made so where the stage is planned: a unit
    # may run in another working directory (a Dask worker's)


def plan_blocks(docs_dir: Path, cfg: ShardsConfig, vocab: Vocab | None = None) -> list[tuple[str, list[tuple[str, list[int]]], list[str]]]:
    """Group documents into blocks by cumulative characters, per split, in corpus order; with a
    mixture (``cfg.sources``, needs ``vocab``), training documents repeated or left out to reach
    the sources' token shares, and each row's source name."""
    parts = sorted(docs_dir.glob("part-*.parquet"))
    cols = ["n_chars", "source"] if cfg.sources else ["n_chars"]
    tables = [pq.read_table(p, columns=cols) for p in parts]
    chars = [t.column("n_chars").to_numpy() for t in tables]
    index = np.cumsum([0] + [len(c) for c in chars])
    held = [np.array([_held_out(cfg, int(index[i]) + r) for r in range(len(c))], bool) for i, c in enumerate(chars)]
    times = [np.ones(len(c), np.int64) for c in chars]  # how many times each document is used
    if cfg.sources:
        names = [{f: source_of(f, cfg.sources) for f in set(t.column("source").to_pylist())} for t in tables]
        src = [np.array([m[f] for f in t.column("source").to_pylist()], np.int64) for m, t in zip(names, tables, strict=True)]
        train = [[(i, np.flatnonzero((src[i] == s) & ~held[i])) for i in range(len(parts))] for s in range(len(cfg.sources))]
        rate = rates(_source_tokens(parts, chars, train, cfg, vocab), cfg.sources)
        for where, r in zip(train, rate.tolist(), strict=True):
            ids = np.concatenate([index[i] + rows for i, rows in where])
            k = copies(ids, np.concatenate([chars[i][rows] for i, rows in where]), r, cfg.seed)
            for (i, rows), n in zip(where, np.split(k, np.cumsum([len(r) for _, r in where])[:-1]), strict=True):
                times[i][rows] = n
    blocks: list[tuple[str, list[tuple[str, list[int]]], list[str]]] = []
    current: dict[str, tuple[list[tuple[str, list[int]]], list[str]]] = {"train": ([], []), "eval": ([], [])}
    size = {"train": 0, "eval": 0}
    for i, part in enumerate(parts):
        for row, n in enumerate(chars[i].tolist()):
            split = "eval" if held[i][row] else "train"
            k = int(times[i][row])
            if k == 0:
                continue
            pieces, names_ = current[split]
            if not pieces or pieces[-1][0] != str(part):
                pieces.append((str(part), []))
            pieces[-1][1].extend([row] * k)
            names_.extend([cfg.sources[src[i][row]].name] * k if cfg.sources else [])
            size[split] += n * k
            if size[split] >= cfg.block_chars:
                blocks.append((split, pieces, names_))
                current[split], size[split] = ([], []), 0
    blocks.extend((split, pieces, names_) for split, (pieces, names_) in current.items() if pieces)
    return blocks


def _source_tokens(parts: list[Path], chars: list[np.ndarray], train: list[list[tuple[int, np.ndarray]]],
                   cfg: ShardsConfig, vocab: Vocab | None) -> np.ndarray:
    """Estimated training tokens per source (``train``: its training rows per part): its characters
    x tokens per character of a sample."""
    if vocab is None:
        raise ValueError("a mixture needs the vocabulary to estimate each source's tokens")
    n = len(cfg.sources)
    total_chars, sample_chars, sample_tokens = np.zeros(n), np.zeros(n), np.zeros(n)
    for s in range(n):
        where = [(i, r) for i, rows in train[s] for r in rows.tolist()]
        c = np.array([chars[i][r] for i, r in where], np.int64)
        total_chars[s] = c.sum()
        by_part: dict[int, list[int]] = {}
        for j in sample_rows(len(where), c, cfg.seed).tolist() if where else []:
            by_part.setdefault(where[j][0], []).append(where[j][1])
        for i, rows in by_part.items():
            sentences = [x for doc in _read_rows(str(parts[i]), tuple(rows)).to_pylist() for x in doc]
            sample_chars[s] += chars[i][rows].sum()
            sample_tokens[s] += sum(len(e.ids) for e in vocab.tokenizer.encode_batch_fast(sentences, add_special_tokens=False))
    return total_chars * sample_tokens / np.maximum(sample_chars, 1)


def _held_out(cfg: ShardsConfig, doc_index: int) -> bool:
    if cfg.eval_fraction == 0:
        return False
    h = hashlib.blake2b(f"{cfg.seed}:{doc_index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < cfg.eval_fraction


@functools.lru_cache(maxsize=2)
def _vocab(tok_dir: str, bert_clean: bool = False) -> Vocab:
    """The stage's vocabulary; for ingest output, with BERT's clean_text step switched off.

    Ingest already deleted every character that step deletes (``bertpipe.data.text``), so
    skipping it changes no token and saves ~15% of tokenization time.
    """
    vocab = load_vocab(Path(tok_dir))
    norm = json.loads(vocab.tokenizer.to_str()).get("normalizer") or {}
    if bert_clean and norm.get("type") == "BertNormalizer" and norm.get("clean_text"):
        vocab.tokenizer.normalizer = BertNormalizer(
            clean_text=False, handle_chinese_chars=norm["handle_chinese_chars"],
            strip_accents=norm["strip_accents"], lowercase=norm["lowercase"])
    return vocab


def _read_rows(part: str, rows: tuple[int, ...]) -> pa.ChunkedArray:
    """The ``sentences`` of the given rows, reading only the row groups that hold them."""
    pf = pq.ParquetFile(part)
    sizes = np.array([pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    row_arr = np.asarray(rows)
    group_of = np.searchsorted(starts, row_arr, side="right") - 1
    groups = np.unique(group_of)
    # position of each selected group's first row within the concatenation of selected groups
    base = dict(zip(groups.tolist(), (np.cumsum(sizes[groups]) - sizes[groups]).tolist(), strict=True))
    local = row_arr - starts[group_of] + np.array([base[g] for g in group_of.tolist()])
    return pf.read_row_groups(groups.tolist(), columns=["sentences"]).column(0).take(pa.array(local))


def tokenize_block(pieces: tuple[tuple[str, tuple[int, ...]], ...], vocab: Vocab) -> tuple[Block, np.ndarray]:
    """Read the block's documents and tokenize every sentence (no special tokens); also each
    row's token count (empty documents included)."""
    sentences: list[str] = []
    doc_sizes: list[int] = []
    for part, rows in pieces:
        col = _read_rows(part, rows)
        for doc in col.to_pylist():
            sentences.extend(doc)
            doc_sizes.append(len(doc))
    ids = [e.ids for e in vocab.tokenizer.encode_batch_fast(sentences, add_special_tokens=False)]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
    # Sentences that tokenize to nothing are dropped; so are documents left empty.
    doc_of_sent = np.repeat(np.arange(len(doc_sizes)), doc_sizes)
    row_tokens = np.bincount(doc_of_sent, weights=lengths, minlength=len(doc_sizes)).astype(np.int64)
    keep = lengths > 0
    lengths, doc_of_sent = lengths[keep], doc_of_sent[keep]
    per_doc = np.bincount(doc_of_sent, minlength=len(doc_sizes))
    per_doc = per_doc[per_doc > 0]
    sent_off = np.concatenate([[0], np.cumsum(lengths)])
    doc_sent = np.concatenate([[0], np.cumsum(per_doc)])
    return Block(tokens, sent_off.astype(np.int64), doc_sent.astype(np.int64)), row_tokens


def assemble(source: np.ndarray, inst: Instances, max_len: int, cls_id: int, sep_id: int, pad_id: int, pair: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded (n, max_len) ids for ``[CLS] A [SEP] B [SEP]`` (or ``[CLS] A [SEP]``), lengths, B start."""
    n = len(inst)
    col = np.arange(max_len)[None, :]  # (1, T)
    a_len, b_len = inst.a_len[:, None], inst.b_len[:, None]  # (n, 1)
    out = np.full((n, max_len), pad_id, dtype=np.int32)
    out[:, 0] = cls_id
    in_a = (col >= 1) & (col <= a_len)
    out[in_a] = source[(inst.a_start[:, None] + col - 1)[in_a]]
    out[np.arange(n), inst.a_len + 1] = sep_id
    split = inst.a_len + 2
    lengths = split.copy()
    if pair:
        in_b = (col >= split[:, None]) & (col < split[:, None] + b_len)
        out[in_b] = source[(inst.b_start[:, None] + col - split[:, None])[in_b]]
        lengths = split + inst.b_len + 1
        out[np.arange(n), lengths - 1] = sep_id
    else:
        split = lengths.copy()  # no segment B: every token has segment id 0
    return out, lengths, split


def build_shard(job: BlockJob) -> dict[str, Any]:
    """Tokenize, sample ``dupe_factor`` passes, shuffle, mask (static) and write one shard."""
    cfg, vocab = job.cfg, _vocab(job.tok_dir, job.bert_clean)
    block, row_tokens = tokenize_block(job.pieces, vocab)
    key = [cfg.seed, job.index, 0 if job.split == "train" else 1]
    passes = [
        sample_pairs(block, np.random.default_rng(key + [p]), cfg.max_seq_length, cfg.short_seq_prob, cfg.nsp_mode,
                     cfg.short_seq_per_instance, cfg.pack)
        for p in range(cfg.dupe_factor)
    ]
    inst = Instances.concat(passes)
    inst = inst.take(np.random.default_rng(key + [cfg.dupe_factor]).permutation(len(inst)))
    mask_rng = np.random.default_rng(key + [cfg.dupe_factor + 1])
    pair = cfg.nsp_mode != "none"
    source = block.tokens if pair else stream_tokens(block, vocab.sep_id)
    name = f"{job.split}-{job.index:05d}.parquet"
    tmp, final = Path(job.out) / f".{name}.tmp", Path(job.out) / name
    stats = {"file": name, "split": job.split, "rows": 0, "tokens": 0, "input_tokens": int(len(block.tokens)),
             "documents": block.n_docs, "sentences": int(len(block.sent_off) - 1), "random_next": 0,
             "single_sentence_chunks": int((inst.chunk_sentences == 1).sum()), "short_target": int(inst.short_target.sum()),
             "masked": 0, "masked_as_mask": 0, "masked_as_random": 0, "masked_as_kept": 0}
    if job.sources:  # a mixture: input tokens per source (the manifest sums them)
        stats["tokens_by_source"] = {name: int(row_tokens[np.array(job.sources) == name].sum()) for name in sorted(set(job.sources))}
    with pq.ParquetWriter(tmp, _schema(cfg.dynamic), compression="zstd") as writer:
        for lo in range(0, len(inst), cfg.rows_per_group):
            part = inst.take(np.arange(lo, min(lo + cfg.rows_per_group, len(inst))))
            ids, lengths, split = assemble(source, part, cfg.max_seq_length, vocab.cls_id, vocab.sep_id, vocab.pad_id, pair)
            cols: dict[str, pa.Array] = {}
            if not cfg.dynamic:
                mb = mask_batch(ids, lengths, cfg.masking, mask_rng, vocab_size=vocab.size, mask_id=vocab.mask_id,
                                special_ids=vocab.special_ids, is_subword=vocab.is_subword, unk_id=vocab.unk_id)
                ids = mb.input_ids
                n_masked = mb.valid.sum(1)
                cols["masked_positions"] = _ragged(mb.positions[mb.valid].astype(np.int16), n_masked)
                cols["masked_ids"] = _ragged(mb.labels[mb.valid].astype(np.int32), n_masked)
                for k, label in enumerate(("masked_as_mask", "masked_as_random", "masked_as_kept")):
                    stats[label] += int((mb.kind == k).sum())
                stats["masked"] += int(n_masked.sum())
            in_seq = np.arange(cfg.max_seq_length)[None, :] < lengths[:, None]
            table = pa.table({
                "input_ids": _ragged(ids[in_seq], lengths),
                "segment_split": pa.array(split.astype(np.int16)),
                "next_sentence_label": pa.array(part.label),
                **cols,
            }, schema=_schema(cfg.dynamic))
            writer.write_table(table, row_group_size=cfg.rows_per_group)
            stats["rows"] += len(part)
            stats["tokens"] += int(lengths.sum())
            stats["random_next"] += int((part.label == 1).sum())
    commit_file(tmp, final)
    stats["sha256"] = sha256_file(final)
    return stats


def _ragged(values: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


@functools.lru_cache(maxsize=2)
def _schema(dynamic: bool) -> pa.Schema:
    fields = [("input_ids", pa.list_(pa.int32())), ("segment_split", pa.int16()), ("next_sentence_label", pa.int8())]
    if not dynamic:
        fields += [("masked_positions", pa.list_(pa.int16())), ("masked_ids", pa.list_(pa.int32()))]
    return pa.schema(fields)


class ShardsStage(Stage[ShardsConfig]):
    """Documents + vocabulary → shards; one unit per block of documents (one shard each)."""

    name, version = STAGE, VERSION
    distributable = True

    def __init__(self, cfg: ShardsConfig, docs: str | Path, tokenizer: str | Path) -> None:
        super().__init__(cfg)
        self.docs, self.tokenizer = resolve_stage_dir(docs, "ingest"), resolve_stage_dir(tokenizer, "wordpiece")
        self.workers = cfg.workers

    @classmethod
    def fingerprint_config(cls, cfg: ShardsConfig) -> dict[str, Any]:
        return cfg.fingerprint_fields()

    def upstream(self) -> list[str]:
        return [read_manifest(self.docs)["fingerprint"], read_manifest(self.tokenizer)["fingerprint"]]

    def plan(self, out: Path) -> list[BlockJob]:
        bert_clean = bool(read_manifest(self.docs).get("bert_clean"))
        # absolute paths for the units (see BlockJob); the manifest keeps the tokenizer_dir given
        docs, tok, out = self.docs.absolute(), str(self.tokenizer.absolute()), str(out.absolute())
        vocab = _vocab(tok, bert_clean) if self.cfg.sources else None
        return [BlockJob(i, split, tuple((p, tuple(r)) for p, r in pieces), tok, bert_clean, self.cfg, out, tuple(names))
                for i, (split, pieces, names) in enumerate(plan_blocks(docs, self.cfg, vocab))]

    def run_unit(self, unit: BlockJob) -> dict[str, Any]:
        return build_shard(unit)

    def publish(self, out: Path, reports: list[dict[str, Any]]) -> dict[str, Any]:
        totals = {k: sum(r[k] for r in reports) for k in reports[0] if isinstance(reports[0][k], int)} if reports else {}
        if not totals.get("rows"):
            raise ValueError(f"no training instances could be made from {self.docs} (documents too short?)")
        tok = read_manifest(self.tokenizer)  # vocabulary facts without loading the tokenizer here
        special, (docs_fp, tok_fp) = tok["special_ids"], self.upstream()
        return {
            "schema_version": SCHEMA_VERSION,
            "config": self.cfg.fingerprint_fields(),
            "upstream": {"ingest": docs_fp, "wordpiece": tok_fp},
            "tokenizer_dir": str(self.tokenizer),
            "vocab": {"size": tok["counts"]["vocab_size"], "pad_id": special["[PAD]"], "cls_id": special["[CLS]"],
                      "sep_id": special["[SEP]"], "mask_id": special["[MASK]"], "unk_id": special["[UNK]"]},
            "schema": {f.name: str(f.type) for f in _schema(self.cfg.dynamic)},
            "counts": totals,
            **({"sources": _source_report(self.cfg.sources, reports)} if self.cfg.sources else {}),
            "shards": reports,
        }


def _source_report(sources: list[SourceShare], reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per source: its weight's share (the target) and the training tokens it got, with their share."""
    got = {s.name: sum(r.get("tokens_by_source", {}).get(s.name, 0) for r in reports if r["split"] == "train") for s in sources}
    total, weights = sum(got.values()) or 1, sum(s.weight for s in sources)
    return [{"name": s.name, "weight": s.weight, "target_share": round(s.weight / weights, 6), "train_tokens": got[s.name],
             "share": round(got[s.name] / total, 6)} for s in sources]


def build_shards(docs_dir: Path, tok_dir: Path, cfg: ShardsConfig, out_root: Path, progress: bool = True,
                 map_units: MapUnits | None = None) -> StageResult:
    """Run the shards stage into ``out_root/<fingerprint>/``; reuse a complete output there."""
    return run_stage(ShardsStage(cfg, docs_dir, tok_dir), out_root, progress=progress, map_units=map_units)
