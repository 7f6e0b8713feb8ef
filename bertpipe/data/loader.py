"""Streaming padded pretraining batches out of Parquet shard directories.

Purpose
    ``ShardDataset`` turns one split (``train`` or ``eval``) of a ``shards`` stage output into
    an endless (or ``epochs``-long) stream of ready micro-batches: a dict of CPU tensors
    ``input_ids``, ``token_type_ids``, ``attention_mask`` (B, T), ``masked_positions``,
    ``masked_lm_labels`` (B, P; -100 marks padding slots), ``next_sentence_label`` (B,),
    ``row_id`` (B,; ``file_index << 32 | row``) and two scalars of the *global* batch the
    micro-batch belongs to, ``global_predictions`` and ``global_rows`` (the loss is normalised
    by them, so every split of a global batch gives the same gradient). Static shards use
    their stored masks; dynamic shards are masked here, a fresh mask per global batch.

One sample order for any cluster size
    The order is defined per global batch of ``G = batch_size x accum x world_size`` rows and
    depends only on (seed, epoch, G): epoch ``e`` concatenates the row groups in the order
    ``Generator([seed, 0, e])`` draws and permutes each window of ``shuffle_buffer`` rows of
    that stream with ``Generator([seed, 1, e, window])``; epochs follow each other and global
    batch ``g`` is positions ``gG .. gG+G-1`` of the result. Micro-batch ``j`` of accumulation
    step on rank ``r`` is rows ``m·B .. m·B+B-1`` of it, ``m = j·world_size + r``; DataLoader
    worker ``i`` of ``n`` makes this rank's micro-batches ``i, i+n, ...``. Dynamic masks are drawn
    for the whole global batch with ``Generator([seed, 2, epoch, g])``. So 2 processes x 4 rows,
    1 process x 4 rows x 2 accumulation steps, or any number of workers, see the same rows with
    the same masks at every step, and ``skip_batches`` (this rank's micro-batches consumed)
    resumes by arithmetic, with nothing replayed.

Trade-offs
    Every consumer decodes the row groups of the whole stream and keeps its slice, and masks
    and pads the whole global batch: world_size x accum times its own share of that work. At
    ~2 us per row it stays far below a training step (a GPU step of 256 x 128 tokens decodes
    ~0.5 ms of rows per consumer); the gain is an order that no cluster size changes. A window
    shuffle over row groups is not a global shuffle; the shards were shuffled within each
    shard when written and the row-group order changes every epoch. Padding to the batch's
    longest row saves work on CPU; ``pad_to="max"`` (or an int) gives static shapes for
    ``torch.compile``/CUDA graphs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
    """One shard row as read."""

    input_ids: np.ndarray  # int32 (L,)
    segment_split: int
    next_sentence_label: int
    masked_positions: np.ndarray | None  # int16 (k,); None for dynamic shards
    masked_ids: np.ndarray | None  # int32 (k,)
    row_id: int  # file_index << 32 | row


@dataclass(frozen=True)
class Unit:
    """One Parquet row group: the unit read (and briefly cached) by every consumer."""

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
    """Padded pretraining micro-batches from one split of a shards directory (see module doc)."""

    def __init__(
        self,
        shards_dir: str | Path,
        split: Literal["train", "eval"] = "train",
        *,
        batch_size: int,
        accum: int = 1,
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
        if batch_size < 1 or accum < 1:
            raise ValueError(f"batch_size and accum must be >= 1, got {batch_size} and {accum}")
        self.path, self.manifest = load_shards_manifest(shards_dir)
        conf = self.manifest["config"]
        self.split, self.batch_size, self.accum, self.seed = split, batch_size, accum, seed
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
        self.global_batch = batch_size * accum * world_size
        self.skip_batches = skip_batches
        self.units = list_units(self.path, self.manifest, split)
        self.num_rows = sum(u.rows for u in self.units)
        self._columns = ["input_ids", "segment_split", "next_sentence_label"]
        if not self.dynamic:
            self._columns += ["masked_positions", "masked_ids"]
        self._layouts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        self._decoded: dict[int, _Decoded] = {}
        self._last: tuple[int, dict[str, torch.Tensor]] | None = None
        # decoded row groups kept: a window's and a global batch's worth, and never less than a few groups
        self._cache_rows = 4 * max(self.shuffle_buffer, self.global_batch, max((u.rows for u in self.units), default=0))

    # ---------------------------------------------------------------- the global order

    def _layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Epoch ``epoch``'s row-group order and each one's first position in the epoch's stream."""
        if epoch not in self._layouts:
            order = (np.random.default_rng([self.seed, _ORDER, epoch]).permutation(len(self.units)) if self.shuffle
                     else np.arange(len(self.units)))
            rows = np.array([self.units[i].rows for i in order], np.int64)
            self._layouts = {epoch: (order, np.cumsum(rows) - rows)}  # one epoch at a time is in use
        return self._layouts[epoch]

    def _window_perm(self, epoch: int, window: int, size: int) -> np.ndarray:
        key = (epoch, window)
        if key not in self._perms:
            if len(self._perms) > 8:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, _SHUFFLE, epoch, window]).permutation(size)
        return self._perms[key]

    def sources(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (unit index, row within the unit) read at each global stream position."""
        N, Wn = self.num_rows, self.shuffle_buffer
        epoch, q = positions // N + self.epoch, positions % N
        units, rows = np.empty_like(q), np.empty_like(q)
        for e in np.unique(epoch).tolist():
            sel = epoch == e
            qe = q[sel]
            if Wn > 1:  # permute within each window of Wn positions
                win, j = qe // Wn, qe % Wn
                for k in np.unique(win).tolist():
                    w = win == k
                    size = min(Wn, N - k * Wn)
                    qe[w] = k * Wn + self._window_perm(e, k, size)[j[w]]
            order, starts = self._layout(e)
            u = np.searchsorted(starts, qe, side="right") - 1
            units[sel], rows[sel] = order[u], qe - starts[u]
        return units, rows

    def _decode(self, i: int) -> _Decoded:
        if i not in self._decoded:
            if sum(d.rows for d in self._decoded.values()) > self._cache_rows:
                self._decoded.clear()  # positions only move forward: older row groups are done
            u = self.units[i]
            t = pq.ParquetFile(u.file).read_row_group(u.group, columns=self._columns)
            ids = t.column("input_ids").combine_chunks()
            d = _Decoded(u, ids.offsets.to_numpy(), ids.values.to_numpy(), t.column("segment_split").to_numpy(),
                         t.column("next_sentence_label").to_numpy())
            if not self.dynamic:
                mp, mi = t.column("masked_positions").combine_chunks(), t.column("masked_ids").combine_chunks()
                if not np.array_equal(mp.offsets.to_numpy(), mi.offsets.to_numpy()):
                    raise ValueError(f"{u.file} row group {u.group}: masked_positions and masked_ids differ in length")
                d.moff, d.mpos, d.mids = mp.offsets.to_numpy(), mp.values.to_numpy(), mi.values.to_numpy()
            self._decoded[i] = d
        return self._decoded[i]

    def rows_at(self, positions: np.ndarray) -> list[Row]:
        """The rows at global stream positions, in that order."""
        return [self._decode(i).row(r) for i, r in zip(*(a.tolist() for a in self.sources(positions)), strict=True)]

    def _global_batch(self, g: int) -> dict[str, torch.Tensor] | None:
        """Global batch ``g`` collated whole (None past the end), the last one cached."""
        if self._last is not None and self._last[0] == g:
            return self._last[1]
        total = None if self.epochs is None else self.epochs * self.num_rows
        lo, hi = g * self.global_batch, (g + 1) * self.global_batch
        if total is not None:
            if lo >= total or (self.drop_last and hi > total):
                return None
            hi = min(hi, total)
        batch = self.collate(self.rows_at(np.arange(lo, hi, dtype=np.int64)), g)
        batch["global_predictions"] = (batch["masked_lm_labels"] != -100).sum()
        batch["global_rows"] = torch.tensor(hi - lo, dtype=torch.int64)
        self._last = (g, batch)
        return batch

    def micro_batch(self, k: int) -> dict[str, torch.Tensor] | None:
        """This rank's micro-batch ``k`` (counting from the start of the stream), or None past the end."""
        g, j = divmod(k, self.accum)
        batch = self._global_batch(g)
        if batch is None:
            return None
        m = j * self.world_size + self.rank
        sl = slice(m * self.batch_size, (m + 1) * self.batch_size)
        out = {key: v[sl] if v.ndim else v for key, v in batch.items()}
        if len(out["row_id"]) == 0:
            return None
        if self.pad_to == "longest":  # trim the global batch's padding to this slice's longest row
            out = _trim(out, int(out["attention_mask"].sum(1).max()))
        return out

    # ---------------------------------------------------------------- iteration

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if not self.units:
            raise ValueError(f"{self.path} split {self.split!r} has no rows")
        if self.epochs is None and self.global_batch > self.num_rows:
            raise ValueError(f"{self.path} split {self.split!r} has {self.num_rows} rows: too few for a global batch "
                             f"of {self.global_batch} ({self.world_size} ranks x {self.accum} micro-batches of {self.batch_size})")
        info = get_worker_info()
        w, n_w = (info.id, info.num_workers) if info is not None else (0, 1)
        k = self.skip_batches + w  # a new DataLoader takes its workers' batches round-robin from worker 0
        while (b := self.micro_batch(k)) is not None:
            yield b
            k += n_w

    def collate(self, rows: list[Row], g: int = 0) -> dict[str, torch.Tensor]:
        """Pad ``rows`` (global batch ``g``) into one batch; dynamic shards are masked with its seed."""
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
            rng = np.random.default_rng([self.seed, _MASK, self.epoch, g])
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


@dataclass
class _Decoded:
    """One row group's columns as NumPy arrays (ragged lists as offsets + values)."""

    unit: Unit
    off: np.ndarray
    ids: np.ndarray
    split: np.ndarray
    nsl: np.ndarray
    moff: np.ndarray | None = None
    mpos: np.ndarray | None = None
    mids: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return self.unit.rows

    def row(self, r: int) -> Row:
        pos = ids = None
        if self.moff is not None:
            pos, ids = self.mpos[self.moff[r]:self.moff[r + 1]], self.mids[self.moff[r]:self.moff[r + 1]]
        return Row(self.ids[self.off[r]:self.off[r + 1]], int(self.split[r]), int(self.nsl[r]), pos, ids,
                   (self.unit.file_index << 32) + self.unit.first_row + r)


def _trim(batch: dict[str, torch.Tensor], T: int) -> dict[str, torch.Tensor]:
    return {k: v[:, :T].contiguous() if k in ("input_ids", "token_type_ids", "attention_mask") else v for k, v in batch.items()}


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
