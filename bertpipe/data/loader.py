"""Streaming padded pretraining batches out of Parquet shard directories.

Purpose
    ``ShardDataset`` turns one split (``train`` or ``eval``) of a ``shards`` stage output into
    an endless (or one-epoch) stream of ready batches: a dict of CPU tensors
    ``input_ids``, ``token_type_ids``, ``attention_mask`` (B, T), ``masked_positions``,
    ``masked_lm_labels`` (B, P; -100 marks padding slots), ``next_sentence_label`` (B,) and
    ``row_id`` (B,; ``file_index << 32 | row``, for checks and debugging). Static shards
    use their stored masks; dynamic shards are masked here with ``masking.mask_batch``, a fresh
    mask per batch and so per epoch.

Partitioning
    The unit of work is a Parquet row group. Every consumer (distributed rank x DataLoader
    worker) sees the same seeded unit order for an epoch; consumer ``c`` of ``n`` takes units
    ``c, c+n, ...`` when there are at least ``n`` units, else rows ``c, c+n, ...`` of all units
    (striding). Either way the consumers' rows are disjoint and together cover the split once
    per epoch. Units are uneven, so consumers hit epoch ends at different batches; training
    is therefore step-based and the stream endless (``epochs=None``), which also keeps DDP
    ranks in lockstep.

Randomness and resumption
    Unit order: ``Generator([seed, 0, epoch])``; shuffle buffer: ``Generator([seed, 1, epoch,
    rank, worker])``, flushed at each epoch end; dynamic masks: ``Generator([seed, 2,
    start_epoch, rank, worker, batch_index])``. Batches are cut from the concatenation of the
    per-epoch shuffled streams, so batch ``k`` of a worker is rows ``kB .. kB+B-1`` of that
    stream. ``skip_batches=k`` (micro-batches this rank already consumed; the DataLoader takes
    them round-robin from its workers, and a resumed loader's workers take over the roles of
    the ones due next) therefore resumes exactly: whole epochs are skipped by arithmetic on
    the row-group metadata and only the epoch in progress is replayed through the buffer (at
    most one epoch of reading). The same stream needs the same seed, world size, worker count
    and batch size.

Trade-offs
    A shuffle buffer over row groups is not a global shuffle; the shards were already
    shuffled within each shard when written, and the unit order changes every epoch, so a
    buffer of a few thousand rows mixes well in bounded memory (the buffer's rows plus one
    row group per reader). Rows are small NumPy arrays and batches are assembled with a
    per-row Python loop, ~2 us per row, far below a training step's cost. Padding to the
    batch's longest row saves work on CPU; a fixed length (``pad_to="max"`` or an int) gives
    static shapes for ``torch.compile``/CUDA graphs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from bertpipe.core.stagedir import resolve_stage_dir
from bertpipe.data.masking import MaskingConfig, mask_batch

_ORDER, _SHUFFLE, _MASK = 0, 1, 2  # first entropy word after the seed: one stream per purpose

class Row(NamedTuple):
    """One shard row as read: the buffered unit of the shuffle."""

    input_ids: np.ndarray  # int32 (L,)
    segment_split: int
    next_sentence_label: int
    masked_positions: np.ndarray | None  # int16 (k,); None for dynamic shards
    masked_ids: np.ndarray | None  # int32 (k,)
    row_id: int  # file_index << 32 | row


@dataclass(frozen=True)
class Unit:
    """One Parquet row group: the unit of work split between consumers."""

    file: Path
    file_index: int
    group: int
    first_row: int  # row index of the group's first row within its file
    rows: int


def load_shards_manifest(shards_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """Resolve a shards stage dir (or a root with ``latest``) and read its manifest."""
    path = resolve_stage_dir(shards_dir, "shards")
    return path, json.loads((path / "manifest.json").read_text())


def list_units(path: Path, manifest: dict[str, Any], split: str) -> list[Unit]:
    units: list[Unit] = []
    files = sorted(s["file"] for s in manifest["shards"] if s["split"] == split)
    for fi, name in enumerate(files):
        meta = pq.ParquetFile(path / name).metadata
        first = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if n:
                units.append(Unit(path / name, fi, g, first, n))
            first += n
    return units


class ShardDataset(IterableDataset):
    """Padded pretraining batches from one split of a shards directory (see module doc)."""

    def __init__(
        self,
        shards_dir: str | Path,
        split: Literal["train", "eval"] = "train",
        *,
        batch_size: int,
        seed: int = 0,
        epoch: int = 0,
        epochs: int | None = None,
        shuffle: bool = True,
        shuffle_buffer: int = 10_000,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        pad_to: Literal["longest", "max"] | int = "longest",
        masking: MaskingConfig | None = None,
        skip_batches: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path, self.manifest = load_shards_manifest(shards_dir)
        conf = self.manifest["config"]
        self.split, self.batch_size, self.seed = split, batch_size, seed
        self.epoch, self.epochs, self.drop_last = epoch, epochs, drop_last
        self.shuffle, self.shuffle_buffer = shuffle, shuffle_buffer if shuffle else 0
        self.dynamic: bool = bool(conf["dynamic"])
        self.nsp_mode: str = conf["nsp_mode"]
        self.max_seq_length: int = int(conf["max_seq_length"])
        if masking is not None and not self.dynamic:
            raise ValueError(f"{self.path} holds statically masked shards; a masking config "
                             "applies only to shards built with dynamic=True")
        self.masking = masking or MaskingConfig.model_validate(conf["masking"])
        self.max_predictions = self.masking.max_predictions_per_seq
        v = self.manifest["vocab"]
        self.vocab_size, self.pad_id, self.mask_id = int(v["size"]), int(v["pad_id"]), int(v["mask_id"])
        self.special_ids = np.array([v[k] for k in ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id")], np.int32)
        self.unk_id = int(v["unk_id"])
        self._is_subword: np.ndarray | None = None
        if pad_to not in ("longest", "max") and not (isinstance(pad_to, int) and pad_to >= self.max_seq_length):
            raise ValueError(f"pad_to must be 'longest', 'max' or an int >= {self.max_seq_length}, got {pad_to!r}")
        self.pad_to = pad_to
        if rank is None or world_size is None:
            rank, world_size = _dist_rank_world()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.rank, self.world_size = rank, world_size
        self.skip_batches = skip_batches
        self.units = list_units(self.path, self.manifest, split)
        self.num_rows = sum(u.rows for u in self.units)
        self._columns = ["input_ids", "segment_split", "next_sentence_label"]
        if not self.dynamic:
            self._columns += ["masked_positions", "masked_ids"]

    # ---------------------------------------------------------------- partitioning

    def _unit_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.units))
        return np.random.default_rng([self.seed, _ORDER, epoch]).permutation(len(self.units))

    def epoch_rows(self, epoch: int, consumer: int, n_consumers: int) -> int:
        """How many rows ``consumer`` of ``n_consumers`` reads in ``epoch`` (metadata only)."""
        if len(self.units) >= n_consumers:
            order = self._unit_order(epoch)[consumer::n_consumers]
            return sum(self.units[i].rows for i in order)
        return len(range(consumer, self.num_rows, n_consumers))

    def _epoch_rows_iter(self, epoch: int, consumer: int, n_consumers: int) -> Iterator[Row]:
        order = self._unit_order(epoch)
        if len(self.units) >= n_consumers:  # whole row groups
            for i in order[consumer::n_consumers]:
                yield from self._read(self.units[i], 0, 1)
            return
        seen = 0  # global row index at the start of the unit: stride over all rows
        for i in order:
            u = self.units[i]
            start = (consumer - seen) % n_consumers
            if start < u.rows:
                yield from self._read(u, start, n_consumers)
            seen += u.rows

    def _read(self, u: Unit, start: int, step: int) -> Iterator[Row]:
        t = pq.ParquetFile(u.file).read_row_group(u.group, columns=self._columns)
        ids_col = t.column("input_ids").combine_chunks()
        off, val = ids_col.offsets.to_numpy(), ids_col.values.to_numpy()
        split = t.column("segment_split").to_numpy()
        nsl = t.column("next_sentence_label").to_numpy()
        if not self.dynamic:
            mp, mi = t.column("masked_positions").combine_chunks(), t.column("masked_ids").combine_chunks()
            moff, mpv, miv = mp.offsets.to_numpy(), mp.values.to_numpy(), mi.values.to_numpy()
            if not np.array_equal(moff, mi.offsets.to_numpy()):
                raise ValueError(f"{u.file} row group {u.group}: masked_positions and masked_ids differ in length")
        base = (u.file_index << 32) + u.first_row
        for r in range(start, u.rows, step):
            pos = ids_ = None
            if not self.dynamic:
                pos, ids_ = mpv[moff[r]:moff[r + 1]].copy(), miv[moff[r]:moff[r + 1]].copy()
            # copies: a buffered row must not keep its whole row group alive
            yield Row(val[off[r]:off[r + 1]].copy(), int(split[r]), int(nsl[r]), pos, ids_, base + r)

    def _shuffled(self, rows: Iterable[Row], rng: np.random.Generator) -> Iterator[Row]:
        size = self.shuffle_buffer
        if size <= 1:
            yield from rows
            return
        buf: list[Row] = []
        draws, k = np.empty(0, np.int64), 0
        for row in rows:
            if len(buf) < size:
                buf.append(row)
                continue
            if k == len(draws):
                draws, k = rng.integers(0, size, 4096), 0
            j = int(draws[k])
            k += 1
            yield buf[j]
            buf[j] = row
        for j in rng.permutation(len(buf)):
            yield buf[j]

    # ---------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        w, n_w = (info.id, info.num_workers) if info is not None else (0, 1)
        # A new DataLoader asks worker 0 first; after k batches the next one is due from the
        # worker that had k % n_w, so loader worker w plays the part of worker (w + k) % n_w.
        w = (w + self.skip_batches) % n_w
        consumer, n = self.rank * n_w + w, self.world_size * n_w
        starved = not self.units or (len(self.units) < n and consumer >= self.num_rows)
        if self.epochs is None and starved:
            raise ValueError(f"{self.path} split {self.split!r} has {self.num_rows} rows in "
                             f"{len(self.units)} row groups: too few for {n} readers "
                             f"({self.world_size} ranks x {n_w} workers)")
        yield from self._stream(consumer, n, w, len(range(w, self.skip_batches, n_w)))

    def _stream(self, consumer: int, n: int, worker: int, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        B = self.batch_size
        epoch, skip_rows = self.epoch, skip * B
        end = None if self.epochs is None else self.epoch + self.epochs
        while skip_rows and (end is None or epoch < end):  # skip whole epochs by arithmetic
            rows = self.epoch_rows(epoch, consumer, n)
            if skip_rows < rows:
                break
            skip_rows, epoch = skip_rows - rows, epoch + 1
        batch_index, pending = skip, []
        while end is None or epoch < end:
            rng = np.random.default_rng([self.seed, _SHUFFLE, epoch, self.rank, worker])
            for row in self._shuffled(self._epoch_rows_iter(epoch, consumer, n), rng):
                if skip_rows:
                    skip_rows -= 1
                    continue
                pending.append(row)
                if len(pending) == B:
                    yield self.collate(pending, worker, batch_index)
                    batch_index, pending = batch_index + 1, []
            epoch += 1
        if pending and not self.drop_last:
            yield self.collate(pending, worker, batch_index)

    def collate(self, rows: list[Row], worker: int = 0, batch_index: int = 0) -> dict[str, torch.Tensor]:
        """Pad ``rows`` into one batch; dynamic shards are masked with a per-batch seed."""
        n, P = len(rows), self.max_predictions
        lengths = np.fromiter((len(r.input_ids) for r in rows), np.int64, n)
        T = int(lengths.max()) if self.pad_to == "longest" else (
            self.max_seq_length if self.pad_to == "max" else int(self.pad_to))
        if lengths.max() > T:
            raise ValueError(f"a row of {lengths.max()} tokens exceeds pad_to={T}")
        ids = np.full((n, T), self.pad_id, np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r.input_ids)] = r.input_ids
        if ids.max() >= self.vocab_size or ids.min() < 0:
            raise ValueError(f"{self.path}: token id {ids.max()} outside the vocabulary of {self.vocab_size}")
        col = np.arange(T)[None, :]
        attn = col < lengths[:, None]
        split = np.fromiter((r.segment_split for r in rows), np.int64, n)
        token_type = (col >= split[:, None]) & attn
        if self.dynamic:
            rng = np.random.default_rng([self.seed, _MASK, self.epoch, self.rank, worker, batch_index])
            mb = mask_batch(ids, lengths, self.masking, rng, vocab_size=self.vocab_size, mask_id=self.mask_id,
                            special_ids=self.special_ids, is_subword=self._subword_table(), unk_id=self.unk_id)
            ids, positions, labels = mb.input_ids.astype(np.int64), mb.positions, mb.labels.astype(np.int64)
        else:
            positions = np.zeros((n, P), np.int64)
            labels = np.full((n, P), -100, np.int64)
            for i, r in enumerate(rows):
                k = len(r.masked_positions)
                if k > P:
                    raise ValueError(f"{self.path}: row {r.row_id & 0xFFFFFFFF} has {k} masked positions "
                                     f"> max_predictions_per_seq {P}")
                positions[i, :k], labels[i, :k] = r.masked_positions, r.masked_ids
            if labels.max(initial=0) >= self.vocab_size:
                raise ValueError(f"{self.path}: masked id {labels.max()} outside the vocabulary of {self.vocab_size}")
        return {
            "input_ids": torch.from_numpy(ids),
            "token_type_ids": torch.from_numpy(token_type.astype(np.int64)),
            "attention_mask": torch.from_numpy(attn.astype(np.int64)),
            "masked_positions": torch.from_numpy(positions.astype(np.int64)),
            "masked_lm_labels": torch.from_numpy(labels),
            "next_sentence_label": torch.from_numpy(np.fromiter((r.next_sentence_label for r in rows), np.int64, n)),
            "row_id": torch.from_numpy(np.fromiter((r.row_id for r in rows), np.int64, n)),
        }

    def _subword_table(self) -> np.ndarray | None:
        if not self.masking.whole_word:
            return None
        if self._is_subword is None:
            from bertpipe.data.wordpiece import load_vocab

            tok_dir = self.manifest.get("tokenizer_dir")
            try:
                self._is_subword = load_vocab(Path(tok_dir)).is_subword
            except (FileNotFoundError, TypeError) as e:
                raise FileNotFoundError(f"whole-word masking needs the tokenizer {tok_dir!r} "
                                        f"recorded in {self.path}/manifest.json: {e}") from None
        return self._is_subword


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
