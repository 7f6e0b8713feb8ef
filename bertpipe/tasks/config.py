"""Fine-tuning options: ``FinetuneConfig`` (one run, or the paper's grid, on one task) and
``EvalTask`` (a task for the flows: files plus options).

Plain pydantic, no torch import, so pipeline configs that list downstream tasks load cheaply.
The fields, their defaults and their order are part of every fine-tuning's fingerprint
(``bertpipe.tasks.finetune.canonical_finetune``): renaming a field or changing a default
renames every cached result, so new options are added with a default that leaves the
fingerprint as it was (see ``dropout`` and ``precision``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bertpipe.core.config import validate_config

Task = Literal["classify", "pair", "qa", "tag"]
Features = Literal["embeddings", "last", "second_to_last", "sum_last4", "concat_last4", "sum_all"]
Pooling = Literal["cls", "mean", "max"]


class FinetuneConfig(BaseModel):
    """One fine-tuning run (or grid) on one task."""

    model_config = ConfigDict(extra="forbid")

    task: Task = Field("classify", description="classify (single sentence), pair, qa (extractive), tag (token tagging)")
    # The paper's grid values; 3e-5 / 32 / 3 epochs sits in the middle of it.
    lr: float = Field(3e-5, gt=0, description="peak learning rate")
    batch_size: int = Field(32, ge=1, description="examples per step")
    epochs: float = Field(3, gt=0, description="passes over the training set")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="share of steps with linear warmup")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay (not on biases/LayerNorm)")
    max_seq_length: int = Field(128, ge=8, description="tokens per sequence (qa: question + context window)")
    doc_stride: int = Field(128, ge=1, description="qa: stride between context windows")
    max_query_length: int = Field(64, ge=1, description="qa: question tokens kept")
    max_answer_length: int = Field(30, ge=1, description="qa: longest predicted answer in tokens")
    seeds: list[int] = Field([0], min_length=1, description="one run per seed; metrics are mean and std")
    init: Literal["checkpoint", "random"] = Field("checkpoint", description="pretrained encoder or random init of its architecture")
    features: Features | None = Field(None, description="feature-based: freeze the encoder, use these layers")
    # cls = the paper ([CLS] through the pretrained tanh pooler); mean/max pool the real tokens' states
    pooling: Pooling = Field("cls", description="classify/pair: sentence vector from [CLS], mean or max of the tokens")
    cased: bool = Field(False, description="the vocabulary is cased (no lowercasing)")
    grid: bool = Field(False, description="search the paper's grid (batch 16/32, lr 5e-5/3e-5/2e-5, 2-4 epochs)")
    pair_layout: Literal["mrpc", "qnli", "rte", "mnli", "auto"] = Field("auto", description="pair: TSV layout")
    regression: bool = Field(False, description="classify/pair: float labels, one output, MSE (e.g. STS-B)")
    # None keeps the checkpoint's config: our presets pretrain without dropout (underfitting regime),
    # while the paper fine-tunes with 0.1 everywhere (A.3). Applies to random init too.
    dropout: float | None = Field(None, ge=0, lt=1, description="hidden and attention dropout while fine-tuning (default: the checkpoint's)")
    # bf16 autocast: ~1.4x faster on a CPU with AVX-512-BF16/AMX and on GPUs; fp32 is the reference.
    precision: Literal["fp32", "bf16"] = Field("fp32", description="fp32, or bf16 autocast for forward and loss")
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda")


class EvalTask(BaseModel):
    """One downstream task for the flows: files and the fine-tuning options."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="label in MLflow and in the output folder")
    train: str = Field(description="training file (relative paths: project folder)")
    eval: str = Field(description="evaluation file")
    config: FinetuneConfig = Field(default_factory=FinetuneConfig)


def eval_tasks(items: list[Any], source: str = "") -> list[EvalTask]:
    """Plain data (or tasks) → validated tasks; an error names the item and the key (``tasks[1].config.lr``)."""
    return [validate_config(EvalTask, t, source=source, at=f"tasks[{i}]") for i, t in enumerate(items)]
