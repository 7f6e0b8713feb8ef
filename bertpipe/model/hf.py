"""Weights in and out: our checkpoint directories and Hugging Face BERT directories.

Only safetensors and JSON are read or written, never pickle (``torch.load``), so loading a
checkpoint cannot execute code. ``transformers`` is not imported here.

Our checkpoint format is a directory holding
    model.safetensors   our state dict (names = HF ``BertForPreTraining`` minus the decoder,
                        which is tied to ``bert.embeddings.word_embeddings.weight``)
    config.json         ``BertConfig.model_dump()``
    vocab.txt           the WordPiece vocabulary, when known

A HF directory is ``config.json`` + ``model.safetensors`` as written by ``save_pretrained``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from bertpipe.core.stagedir import atomic_dir
from bertpipe.model.bert import BertConfig, BertForPreTraining

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
VOCAB = "vocab.txt"

# HF config keys that map 1:1 onto BertConfig fields.
_SHARED_KEYS = [
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "layer_norm_eps", "initializer_range", "pad_token_id",
]
# Keys HF checkpoints may carry that we drop: buffers (recomputed) and the tied decoder.
_BUFFERS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")
_DECODER_W = "cls.predictions.decoder.weight"
_DECODER_B = "cls.predictions.decoder.bias"


@dataclass
class HFLoadReport:
    """What ``load_hf_directory`` could not map: ``missing`` stay at their initial values."""

    missing: list[str] = field(default_factory=list)  # our keys the HF file lacks
    ignored: list[str] = field(default_factory=list)  # HF keys we do not use


# --------------------------------------------------------------------------------------------
# Hugging Face -> ours


def _resolve_hf_dir(path: Path) -> Path:
    """The folder with config.json; follows a sentence-transformers ``modules.json``."""
    if (path / CONFIG).exists():
        return path
    modules = path / "modules.json"
    if modules.exists():
        for m in json.loads(modules.read_text()):
            if m.get("type", "").endswith("Transformer") and (path / m["path"] / CONFIG).exists():
                return path / m["path"]
    raise FileNotFoundError(f"no {CONFIG} in {path} (nor a Transformer module in modules.json)")


def config_from_hf(hf: dict) -> BertConfig:
    """Our BertConfig from a HF BERT config.json dict; refuses what we do not implement."""
    if hf.get("model_type", "bert") != "bert":
        raise ValueError(f"model_type {hf.get('model_type')!r} is not 'bert'")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {hf['hidden_act']!r} unsupported: only exact 'gelu'")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported")
    fields = {k: hf[k] for k in _SHARED_KEYS if hf.get(k) is not None}
    fields["causal"] = bool(hf.get("is_decoder", False))
    return BertConfig(**fields)


def _our_name(hf_name: str) -> str:
    """HF parameter name -> ours: add the ``bert.`` prefix of BertModel files, gamma/beta."""
    name = hf_name
    if name.startswith(("embeddings.", "encoder.", "pooler.")):
        name = "bert." + name  # saved from BertModel rather than BertForPreTraining
    if name.endswith(".gamma"):
        name = name[: -len("gamma")] + "weight"  # pre-2019 LayerNorm naming
    elif name.endswith(".beta"):
        name = name[: -len("beta")] + "bias"
    return name


def load_hf_directory(path: str | os.PathLike) -> tuple[BertConfig, dict[str, Tensor]]:
    """Read a HF BERT directory (config.json + model.safetensors) into our config and names.

    Accepts ``BertModel`` files (no ``bert.`` prefix) and ``BertForPreTraining`` files, and the
    old ``LayerNorm.gamma/beta`` names. Keys our model has but the file lacks (typically the
    ``cls.*`` heads of a ``BertModel`` file) are logged; they stay at init when loaded with
    ``load_into``. Use ``load_hf_directory_with_report`` to get those lists.
    """
    cfg, state, _ = load_hf_directory_with_report(path)
    return cfg, state


def load_hf_directory_with_report(
    path: str | os.PathLike, warn: bool = True,
) -> tuple[BertConfig, dict[str, Tensor], HFLoadReport]:
    hf_dir = _resolve_hf_dir(Path(path))
    cfg = config_from_hf(json.loads((hf_dir / CONFIG).read_text()))
    weights = hf_dir / WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found (only safetensors weights are read)")
    raw: dict[str, Tensor] = {}
    with safe_open(weights, framework="pt") as f:
        for k in f.keys():
            raw[_our_name(k)] = f.get_tensor(k)

    with torch.device("meta"):
        expected = BertForPreTraining(cfg).state_dict()
    report = HFLoadReport()
    state: dict[str, Tensor] = {}
    for k, t in raw.items():
        if k in expected:
            state[k] = t
        elif k == _DECODER_B and "cls.predictions.bias" not in raw:
            state["cls.predictions.bias"] = t  # some exports keep only the decoder's bias
        elif k == _DECODER_W:
            word = raw.get("bert.embeddings.word_embeddings.weight")
            if word is not None and not torch.equal(word, t):
                log.warning("%s differs from the word embeddings; we tie them and drop it", k)
        elif k not in _BUFFERS and k != _DECODER_B:
            report.ignored.append(k)
    report.missing = [k for k in expected if k not in state]
    for k in expected:
        if k in state and state[k].shape != expected[k].shape:
            raise ValueError(f"{k}: shape {tuple(state[k].shape)} in file, "
                             f"{tuple(expected[k].shape)} expected from config.json")
    if report.missing and warn:  # (a caller that reports them itself passes warn=False)
        log.warning("HF weights in %s lack %d tensors (left at init): %s",
                    hf_dir, len(report.missing), report.missing)
    if report.ignored:
        log.warning("ignored %d HF tensors we have no place for: %s",
                    len(report.ignored), report.ignored)
    return cfg, state, report


def load_into(model: BertForPreTraining, state: dict[str, Tensor]) -> list[str]:
    """Copy a (possibly partial) state dict into ``model``; returns the keys left at init."""
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise KeyError(f"unexpected keys: {result.unexpected_keys}")
    return list(result.missing_keys)


def import_hf(hf_dir: str | os.PathLike, out_ckpt_dir: str | os.PathLike) -> HFLoadReport:
    """Convert a HF BERT directory into our checkpoint directory (vocab.txt copied if present)."""
    cfg, state, report = load_hf_directory_with_report(hf_dir)
    model = BertForPreTraining(cfg)
    load_into(model, state)
    vocab = _resolve_hf_dir(Path(hf_dir)) / VOCAB
    save_checkpoint(model, out_ckpt_dir, vocab_file=vocab if vocab.exists() else None)
    return report


# --------------------------------------------------------------------------------------------
# Our checkpoints


def save_checkpoint(
    model: BertForPreTraining,
    ckpt_dir: str | os.PathLike,
    vocab_file: str | os.PathLike | None = None,
) -> Path:
    """Write ``model`` to ``ckpt_dir`` atomically: a sibling temp dir, then a rename.

    The whole directory is replaced. An existing ``vocab.txt`` there is kept unless
    ``vocab_file`` is given.
    """
    ckpt_dir = Path(ckpt_dir)
    with atomic_dir(ckpt_dir, replace=True) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, tmp / WEIGHTS, metadata={"format": "pt"})
        (tmp / CONFIG).write_text(model.config.model_dump_json(indent=2) + "\n")
        src_vocab = Path(vocab_file) if vocab_file is not None else ckpt_dir / VOCAB
        if src_vocab.exists():
            shutil.copyfile(src_vocab, tmp / VOCAB)
        elif vocab_file is not None:
            raise FileNotFoundError(src_vocab)
    return ckpt_dir


def load_config(ckpt_dir: str | os.PathLike) -> BertConfig:
    return BertConfig.model_validate_json((Path(ckpt_dir) / CONFIG).read_text())


def load_state_dict(ckpt_dir: str | os.PathLike) -> dict[str, Tensor]:
    with safe_open(Path(ckpt_dir) / WEIGHTS, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def load_checkpoint(ckpt_dir: str | os.PathLike) -> BertForPreTraining:
    """Rebuild the model saved by ``save_checkpoint`` (strict: every tensor must match)."""
    model = BertForPreTraining(load_config(ckpt_dir))
    model.load_state_dict(load_state_dict(ckpt_dir), strict=True)
    return model


# --------------------------------------------------------------------------------------------
# Ours -> Hugging Face


def hf_config(cfg: BertConfig) -> dict:
    """A HF ``BertForPreTraining`` config.json dict for ``cfg``."""
    if cfg.embedding_fusion != "sum":
        raise ValueError(
            f"cannot export embedding_fusion={cfg.embedding_fusion!r} to Hugging Face: HF BERT "
            "only sums token, segment and position embeddings (no 3H -> H projection)"
        )
    out = {k: getattr(cfg, k) for k in _SHARED_KEYS}
    out.update(
        architectures=["BertForPreTraining"],
        model_type="bert",
        hidden_act="gelu",
        position_embedding_type="absolute",
        tie_word_embeddings=True,  # decoder weight = word embeddings, as in our model
        is_decoder=cfg.causal,  # HF's causal (left-to-right) self-attention switch
        add_cross_attention=False,
        use_cache=False,
        dtype="float32",
    )
    return out


def export_hf(ckpt_dir: str | os.PathLike, hf_dir: str | os.PathLike) -> Path:
    """Write our checkpoint as a HF directory ``BertForPreTraining.from_pretrained`` loads.

    Tensor names are already HF's. The decoder weight is left out, as HF's own
    ``save_pretrained`` does: ``tie_word_embeddings`` makes HF tie it to the word embeddings
    (and its bias to ``cls.predictions.bias``) on load.
    """
    ckpt_dir, hf_dir = Path(ckpt_dir), Path(hf_dir)
    cfg = load_config(ckpt_dir)
    config = hf_config(cfg)  # raises for concat fusion before anything is written
    state = load_state_dict(ckpt_dir)
    hf_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, hf_dir / WEIGHTS, metadata={"format": "pt"})
    (hf_dir / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if (ckpt_dir / VOCAB).exists():
        shutil.copyfile(ckpt_dir / VOCAB, hf_dir / VOCAB)
    return hf_dir
