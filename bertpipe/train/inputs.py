"""What a pretraining reads, checked before a model is built: its phases and their shards.

A run has one or two ``Phase``s (phase 1 at length 128, then optionally phase 2 at 512, as in
the paper), each a shards directory read for a number of steps at a batch size. ``read_inputs``
reads the phases' manifests and checks them against each other and the config (one
vocabulary and one sentence-level objective for both phases, lengths the model can hold,
dynamic shards when the training draws its own masks), then returns everything the loop
derives from them as one ``RunInputs``: the model's config (its vocabulary size taken from the
shards), whether NSP is trained, the longest sequence, the vocabulary file for checkpoints and
the shards' fingerprints that a checkpoint records. The pipeline config checks the same
cross-stage rules earlier (``bertpipe.pipeline.config``); these checks also cover shards
handed to ``bertpipe pretrain`` directly. ``check_shared_run_dir``: with several nodes, every
rank must see the run directory rank 0 writes. ``ltr_targets`` and ``sample_digest``: what a
batch feeds a left-to-right model, and a checksum of which rows and masks a step trained on.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bertpipe.data.loader import load_shards_manifest
from bertpipe.model.bert import BertConfig
from bertpipe.model.init import InitSource, open_init
from bertpipe.train.config import PretrainConfig


@dataclass(frozen=True)
class Phase:
    shards: Path
    steps: int  # optimizer steps spent in this phase
    batch_size: int


@dataclass(frozen=True)
class RunInputs:
    model: BertConfig  # the preset with the config's overrides, sized to the shards' vocabulary
    shards_fps: list[str | None]  # each phase's shards fingerprint, recorded in every checkpoint
    max_len: int  # phase 1's sequence length
    vocab_file: Path | None  # the tokenizer's vocab.txt, saved beside each checkpoint when present
    use_nsp: bool  # the shards carry a sentence-level label and the model can use it
    ltr: bool  # a causal model: trained left-to-right on next tokens, without NSP
    init: InitSource | None = None  # the weights the model starts from (None: random, as BERT)


def read_inputs(cfg: PretrainConfig, phases: list[Phase]) -> RunInputs:
    manifests = [load_shards_manifest(ph.shards) for ph in phases]
    (p1, m1), *rest = manifests
    for p2, m2 in rest:  # every phase must be written in one vocabulary: ids mean the same tokens
        t1, t2 = (m.get("upstream", {}).get("wordpiece") for m in (m1, m2))
        if t1 != t2 or m1["vocab"] != m2["vocab"]:
            raise ValueError(f"the phase-2 shards {p2} were made with the tokenizer {t2} ({m2.get('tokenizer_dir')}), "
                             f"the phase-1 shards {p1} with {t1} ({m1.get('tokenizer_dir')}): build both from one vocabulary")
    vocab = m1["vocab"]
    init = open_init(cfg.init) if cfg.init is not None else None
    model = cfg.architecture(init, vocab_size=vocab["size"], pad_token_id=vocab["pad_id"])
    vocab_file = Path(m1.get("tokenizer_dir") or "") / "vocab.txt"
    if init is not None:
        _same_vocabulary(p1, vocab["size"], vocab_file if vocab_file.is_file() else None, init)
    modes = {m["config"]["nsp_mode"] for _, m in manifests}
    if len(modes) > 1:
        raise ValueError(f"the phases' shards differ in nsp_mode: {sorted(modes)}")
    for p, m in manifests:
        if cfg.masking is not None and not m["config"]["dynamic"]:
            raise ValueError(f"{p}: masking can only be set for shards built with dynamic=True")
        if m["vocab"]["size"] > model.vocab_size:
            raise ValueError(f"{p}: shards use a vocabulary of {m['vocab']['size']} tokens but the model's "
                             f"vocab_size is {model.vocab_size}; rebuild the shards or enlarge the model")
        if m["config"]["max_seq_length"] > model.max_position_embeddings:
            raise ValueError(f"{p}: max_seq_length {m['config']['max_seq_length']} exceeds the model's "
                             f"max_position_embeddings {model.max_position_embeddings}")
    # A causal model is trained as a left-to-right LM: next-token prediction on the unmasked
    # text, and no NSP (its [CLS] sees only itself): the paper's "LTR & No NSP".
    return RunInputs(model=model, shards_fps=[m.get("fingerprint") for _, m in manifests],
                     max_len=m1["config"]["max_seq_length"], vocab_file=vocab_file if vocab_file.is_file() else None,
                     use_nsp=modes != {"none"} and not model.causal, ltr=model.causal, init=init)


def _same_vocabulary(shards: Path, size: int, vocab_file: Path | None, init: InitSource) -> None:
    """Token ids mean the init model's tokens only in its own vocabulary: shards of another are refused."""
    if vocab_file is not None and init.vocab is not None:
        same = vocab_file.read_bytes().split() == init.vocab.read_bytes().split()
    else:  # a vocabulary file out of reach: its size is what can be compared
        same = size == init.config.vocab_size
    if not same or size != init.config.vocab_size:
        raise ValueError(f"the shards {shards} were built with the vocabulary {vocab_file or '(file not found)'} ({size} tokens), "
                         f"the init model {init.source} uses {init.vocab or '(no vocab.txt)'} ({init.config.vocab_size} "
                         "tokens): build the shards with the init model's vocabulary (wordpiece.vocab_file)")


def check_shared_run_dir(out: Path, rank: int, world: int) -> None:
    """Every rank must see the run directory rank 0 writes (several nodes: shared storage); an
    error naming the ranks and hosts that do not, raised on every rank alike."""
    token = [uuid.uuid4().hex if rank == 0 else None]
    dist.broadcast_object_list(token, src=0)
    probe = out / f".shared-{token[0]}"
    if rank == 0:
        probe.write_text(socket.gethostname())
    dist.barrier()
    seen: list[Any] = [None] * world
    dist.all_gather_object(seen, (rank, socket.gethostname(), probe.exists()))
    dist.barrier()
    if rank == 0:
        probe.unlink()
    if blind := [(r, host) for r, host, ok in seen if not ok]:
        raise RuntimeError(f"rank(s) {', '.join(f'{r} on {h}' for r, h in blind)} do not see the run directory {out} "
                           "that rank 0 writes: every node needs it at the same path on shared storage")


def ltr_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor, masked_positions: torch.Tensor,
                masked_lm_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-to-right LM inputs and targets from a masked batch: the original text (masked
    slots restored from their labels) and, for position t, token t+1 (-100 past the end)."""
    real = masked_lm_labels != -100  # (B, P)
    ids = input_ids.scatter(1, masked_positions, torch.where(real, masked_lm_labels, input_ids.gather(1, masked_positions)))  # (B, T)
    targets = ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)  # (B, T-1)
    return ids, targets


def sample_digest(b: dict[str, torch.Tensor]) -> torch.Tensor:
    """An order-free checksum of the batch's rows and masks (summed over ranks and micro-batches)."""
    masks = (b["masked_lm_labels"].clamp(min=0) * (b["masked_positions"] + 1)).sum(1)  # (B,)
    return ((b["row_id"] * 2654435761) % 2**31 + masks % 2**31).sum()
