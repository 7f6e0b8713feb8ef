"""Pretraining configuration: the model overrides and every knob of a run.

Kept apart from the loop (``bertpipe.train.loop``) so the pipeline config and the command line
build and validate it without the training code. ``ModelOverrides`` is derived from
``BertConfig``, so a model field's type, bounds and description are written once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from bertpipe.data.masking import MaskingConfig
from bertpipe.model.bert import BertConfig
from bertpipe.model.init import InitSource, init_architecture
from bertpipe.train.optim import OptimConfig

# The BertConfig fields a pipeline may change; the others (segment vocabulary, LayerNorm eps,
# pad id) follow the data or the reference and stay as the preset has them.
OVERRIDABLE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings",
               "vocab_size", "hidden_dropout_prob", "attention_probs_dropout_prob", "embedding_fusion", "causal",
               "initializer_range")


class _Overrides(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def overrides(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def _optional(name: str) -> tuple[Any, Any]:
    """``BertConfig``'s field, with its type, bounds and description, made optional (None: the preset's)."""
    f = BertConfig.model_fields[name]
    description = "vocabulary size (default: the shards')" if name == "vocab_size" else f.description
    typ = Annotated[f.annotation, *f.metadata] if f.metadata else f.annotation
    return Optional[typ], Field(None, description=description)  # noqa: UP045


ModelOverrides = create_model("ModelOverrides", __base__=_Overrides, __module__=__name__,
                              **{name: _optional(name) for name in OVERRIDABLE})
ModelOverrides.__doc__ = "Changes to a model preset; unset fields keep the preset's values (derived from ``BertConfig``)."


class PretrainConfig(BaseModel):
    """Everything that shapes a pretraining run. The launcher's flags mirror these fields."""

    model_config = ConfigDict(extra="forbid")

    # Unset: tiny, or with `init` the init model's architecture (a preset given with it must agree).
    preset: Literal["tiny", "mini", "small", "medium", "base", "large"] | None = Field(
        None, description="model size preset (default: tiny; with init: the init model's)")
    model: ModelOverrides = Field(default_factory=lambda: ModelOverrides(), description="changes to the preset")
    init: str | None = Field(None, description="start from these weights: a HF BERT directory, a bertpipe checkpoint or "
                                                 "models:/NAME/VERSION (default: random, as BERT); fresh optimizer and warmup")
    # 32 x 128 tokens: about a second per step for the tiny preset on a 2-core CPU.
    batch_size: int = Field(32, ge=1, description="sequences per rank per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    # 0 with `init`: no update; the init model is evaluated and saved as published (a baseline).
    steps: int = Field(1000, ge=0, description="optimizer steps in total, both phases (0 with init: the model as published)")
    # The paper: 90% of steps at length 128, the last 10% at 512 (position embeddings learn late).
    phase2_fraction: float = Field(0.1, ge=0, lt=1, description="share of steps on the phase-2 shards, if given")
    phase2_batch_size: int | None = Field(None, ge=1, description="phase-2 micro-batch (default: batch_size)")
    # warmup_ratio 0.01 = the paper's 10k of 1M steps; a fixed 10k would exceed short runs.
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(warmup_ratio=0.01), description="optimizer")
    masking: MaskingConfig | None = Field(None, description="dynamic shards only: training masking instead of the manifest's (held-out eval keeps the manifest's)")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast dtype (bf16 also on CPU; fp16 CUDA only)")
    compile: bool = Field(False, description="torch.compile the model (pays off on long runs; try pad_to=max)")
    pad_to: Literal["longest", "max"] = Field("longest", description="pad batches to their longest row or to max_seq_length")
    log_every: int = Field(10, ge=1, description="train metrics every N steps")
    eval_every: int = Field(200, ge=0, description="evaluate on the eval shards every N steps (0: only at the end)")
    eval_batches: int = Field(20, ge=1, description="eval batches per rank")
    checkpoint_every: int = Field(500, ge=0, description="checkpoint every N steps (0: only at the end / SIGTERM)")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints to keep")
    keep_steps: list[int] = Field([], description="also checkpoint at these steps and keep them (progress evaluations)")
    seed: int = Field(12345, description="seed of init, dropout and data order")  # the reference's seed
    device: str = Field("auto", description="auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda, ...")
    # 0: batches are built in the training process; at ~2 us per row that is <1% of a CPU step.
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per rank")
    shuffle_buffer: int = Field(10_000, ge=0, description="rows in the shuffle buffer")
    # Runs are named by their global batch (batch_size x grad_accum x devices x nnodes), not its split.
    devices: int = Field(1, ge=1, description="data-parallel processes: >1 launches torchrun (one per GPU; gloo on CPU)")
    # Several machines: each runs the same command; torchrun's c10d rendezvous forms the group.
    nnodes: int = Field(1, ge=1, description="machines, each running `devices` processes (the same command on each)")
    rdzv_endpoint: str | None = Field(None, description="HOST:PORT of the c10d rendezvous (a node's address; needed with nnodes > 1)")
    rdzv_id: str = Field("bertpipe", description="rendezvous id: one per job, the same on every node")
    rdzv_timeout: int = Field(900, ge=1, description="seconds to wait for every node to join")
    node_rank: int | None = Field(None, ge=0, description="this node's rank for a static rendezvous (default: assigned at join)")
    # Under torchrun only (devices x nnodes > 1): a failed torchrun is started again and resumes.
    max_restarts: int = Field(0, ge=0, description="times to restart torchrun after a worker fails (resumes from the newest checkpoint)")
    # Under Prefect: a failed pretraining task (the process killed, restarts spent) runs again and resumes.
    retries: int = Field(0, ge=0, description="Prefect retries of the pretraining task (each resumes from the newest checkpoint)")


    @model_validator(mode="after")
    def _steps(self) -> PretrainConfig:
        if self.steps == 0 and self.init is None:
            raise ValueError("`steps` 0 trains nothing: it is for an `init` model evaluated as published")
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            raise ValueError(f"`nnodes` {self.nnodes} needs `rdzv_endpoint` (HOST:PORT of one node, reachable from all)")
        if self.node_rank is not None and self.node_rank >= self.nnodes:
            raise ValueError(f"`node_rank` {self.node_rank} must be below `nnodes` {self.nnodes}")
        return self

    def world_size(self) -> int:
        return self.devices * self.nnodes

    def global_batches(self, world: int | None = None) -> dict[str, int | None]:
        """Rows per optimizer step in each phase, for ``world`` processes (default: this config's):
        what names the run and its sample order, however it is split."""
        per = self.grad_accum * (world or self.world_size())
        return {"global_batch": self.batch_size * per,
                "phase2_global_batch": self.phase2_batch_size * per if self.phase2_batch_size else None}

    def architecture(self, init: InitSource | None = None, **data: Any) -> BertConfig:
        """The model this config trains: the preset (or ``init``'s architecture) with the model
        settings; ``data``: what the shards fix (``vocab_size``, ``pad_token_id``) unless set."""
        given = self.model.overrides()
        if init is None:
            return BertConfig.from_preset(self.preset or "tiny", **(data | given))
        preset = BertConfig.from_preset(self.preset) if self.preset is not None else None
        return init_architecture(init, preset, given)


# Fields that may change between an interrupted run and its resumption. The split of a global
# batch (micro-batch, accumulation, processes, nodes) is free as long as ``global_batches`` stay.
FREE_FIELDS = {"log_every", "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints", "device", "compile",
               "devices", "nnodes", "rdzv_endpoint", "rdzv_id", "rdzv_timeout", "node_rank", "num_workers",
               "batch_size", "grad_accum", "phase2_batch_size", "max_restarts", "retries"}
