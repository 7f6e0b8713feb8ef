"""bertpipe: pretrain and evaluate BERT-style encoders on your own corpus.

The library never imports Prefect: every stage is a plain typed function taking its inputs,
one pydantic config and an output root (``ingest(inputs, cfg, out_root)``,
``build_shards(docs, tok, cfg, out_root)``, ``finetune_stage(checkpoint, train, eval, cfg,
out_root)``), so tests, the CLI, notebooks and the Prefect flows in ``flows/`` call the same
code. The whole pipeline is ``run_pipeline(load_pipeline_config("tiny", overrides))``.

The public names below are imported on first use, so ``import bertpipe`` stays light (no
torch, no pyarrow) for a command that only parses its flags.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → the module that defines it
_EXPORTS = {
    "ConfigError": "bertpipe.core.config",
    "StageResult": "bertpipe.core.stage",
    "PipelineConfig": "bertpipe.pipeline.config",
    "load_pipeline_config": "bertpipe.pipeline.config",
    "plan": "bertpipe.pipeline.graph",
    "run_pipeline": "bertpipe.pipeline.runner",
    "ingest": "bertpipe.data.ingest",
    "train_wordpiece": "bertpipe.data.wordpiece",
    "build_shards": "bertpipe.data.shards",
    "pretrain_stage": "bertpipe.train.stage",
    "finetune_stage": "bertpipe.tasks.finetune",
}
__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from bertpipe.core.config import ConfigError
    from bertpipe.core.stage import StageResult
    from bertpipe.data.ingest import ingest
    from bertpipe.data.shards import build_shards
    from bertpipe.data.wordpiece import train_wordpiece
    from bertpipe.pipeline.config import PipelineConfig, load_pipeline_config
    from bertpipe.pipeline.graph import plan
    from bertpipe.pipeline.runner import run_pipeline
    from bertpipe.tasks.finetune import finetune_stage
    from bertpipe.train.stage import pretrain_stage


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bertpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
