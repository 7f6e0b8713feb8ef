"""The whole pretraining pipeline as one strict pydantic config, loaded from a named preset.

``PipelineConfig`` nests one config per stage (ingest, wordpiece, shards, optionally phase-2
shards, pretrain) plus where the corpus is, where outputs and tracking go, and the downstream
tasks fine-tuned on the result. Presets are JSON files shipped in
``bertpipe/experiments/presets/`` (add your own folder with ``BERTPIPE_PRESETS``, see
``bertpipe.core.settings``). ``load_pipeline_config`` deep-merges a preset with overrides and
validates the result through ``bertpipe.core.config``: an unknown key anywhere in the tree, a
bad value, or a combination that cannot train fails before any stage runs, with one line per
problem naming its dotted path (and, for a misspelt key, the valid name nearest to it).
Relative paths resolve against the base directory (``BERTPIPE_BASE_DIR``, default: the
working directory).

The two masking fields have different roles:

- ``shards.masking`` (and ``phase2.masking``) is the masking of the data: the masks stored in
  static shards, and always the masks of the held-out evaluation, so that held-out figures
  compare across training choices. With ``shards.dynamic`` the shards store no training
  masks and this is also the default training masking.
- ``pretrain.masking`` is a training choice: the masking drawn afresh for every batch, which
  needs dynamic shards. Changing it re-runs only the pretraining; the shards and held-out
  set are shared (the masking sweeps vary this one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bertpipe.core.config import ConfigError, validate_config
from bertpipe.core.keys import deep_merge
from bertpipe.core.settings import json_names, named_json, resolve
from bertpipe.data.ingest import IngestConfig, expand_inputs
from bertpipe.data.mixture import SourceShare
from bertpipe.data.shards import ShardsConfig
from bertpipe.data.wordpiece import WordPieceConfig
from bertpipe.model.init import InitSource, open_init
from bertpipe.tasks.config import EvalTask
from bertpipe.tasks.text import task_corpus
from bertpipe.train.config import PretrainConfig

# Keys that were valid in an earlier release (dotted path → its successor, or None: dropped with
# a warning), so that an old run's config still loads. None so far: every key any shipped preset,
# sweep or recorded run used is still a field (checked against every preset and sweep in git).
RETIRED: dict[str, str | None] = {}


def _paths(entries: list[str | CorpusSource]) -> list[str]:
    return [p for e in entries for p in ([e] if isinstance(e, str) else e.paths)]


class CorpusSource(BaseModel):
    """A named part of the corpus with a weight: its target share of the training tokens."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the source's name (tokens per source in the shards manifest)")
    paths: list[str] = Field(min_length=1, description="its input files, directories or globs")
    weight: float = Field(gt=0, description="relative share of the training tokens (up- or down-sampled in shards)")


class PipelineConfig(BaseModel):
    """Corpus → WordPiece → shards (phase 1, optionally phase 2) → pretraining → fine-tuning."""

    model_config = ConfigDict(extra="forbid")

    corpus: list[str | CorpusSource] = Field(["data/sample"], description="input files, directories or globs; or named "
                                             "sources with weights (a mixture: all entries then named)")
    # Task-adaptive pretraining (Gururangan et al. 2020): the tasks' unlabelled training text.
    corpus_tasks: list[str] = Field([], description="names of `evaluate` tasks whose training text (labels dropped) "
                                                    "joins the corpus")
    work_dir: str = Field("cache", description="root of every stage's fingerprinted outputs")
    experiment: str = Field("pretrain", description="MLflow experiment")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: sqlite:///<base dir>/mlflow.db)")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    wordpiece: WordPieceConfig = Field(default_factory=WordPieceConfig)
    shards: ShardsConfig = Field(default_factory=lambda: ShardsConfig(eval_fraction=0.05),
                                 description="pairs and masks; its masking is the stored one and the held-out set's")
    phase2: ShardsConfig | None = Field(None, description="shards for phase 2 (length 512), same documents and vocabulary")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    evaluate: list[EvalTask] = Field([], description="downstream tasks fine-tuned on the final checkpoint (finetune subflow)")
    # The paper's Appendix C.1 (MLM vs LTR convergence): the same tasks on earlier checkpoints.
    evaluate_steps: list[int] = Field([], description="also fine-tune the checkpoints at these pretraining steps")

    @field_validator("corpus")
    @classmethod
    def _readable(cls, entries: list[str | CorpusSource]) -> list[str | CorpusSource]:
        named = [e for e in entries if isinstance(e, CorpusSource)]
        if named and len(named) < len(entries):
            raise ValueError("a mixture names every corpus entry: {name, paths, weight} for each, not plain paths beside them")
        if len({e.name for e in named}) < len(named):
            raise ValueError(f"corpus source names repeat: {[e.name for e in named]}")
        expand_inputs([str(resolve(p)) for p in _paths(entries)])  # raises InputError naming the missing path
        return entries  # as written (a run form shows the preset's spelling); resolved where the stages run

    @model_validator(mode="after")
    def _trainable(self) -> PipelineConfig:
        """The rules that join stages, checked here rather than when training reaches them."""
        phases = {"shards": self.shards} | ({"phase2": self.phase2} if self.phase2 is not None else {})
        if not self.corpus and not self.corpus_tasks:
            raise ValueError("`corpus` is empty and `corpus_tasks` names no task: there is no text to pretrain on")
        if unknown := [t for t in self.corpus_tasks if t not in {e.name for e in self.evaluate}]:
            raise ValueError(f"`corpus_tasks` names {', '.join(map(repr, unknown))}, not tasks in `evaluate` "
                             f"({', '.join(e.name for e in self.evaluate) or 'none'})")
        if self.pretrain.masking is not None and (static := [n for n, s in phases.items() if not s.dynamic]):
            raise ValueError(f"`pretrain.masking` is the masking drawn during training, which needs dynamic shards: set "
                             f"{' and '.join(f'`{n}.dynamic`' for n in static)} to true, or change `shards.masking` instead")
        if self.phase2 is not None:
            if self.phase2.nsp_mode != self.shards.nsp_mode:
                raise ValueError(f"`phase2.nsp_mode` ({self.phase2.nsp_mode}) differs from `shards.nsp_mode` "
                                 f"({self.shards.nsp_mode}): both phases train one sentence-level objective")
            if self.pretrain.phase2_fraction == 0:
                raise ValueError("`phase2` shards are given but `pretrain.phase2_fraction` is 0: no step would read them")
        init = self._init()
        model = self.pretrain.architecture(init)
        for name, s in phases.items():
            if s.max_seq_length > model.max_position_embeddings:
                raise ValueError(f"`{name}.max_seq_length` {s.max_seq_length} exceeds the model's max_position_embeddings "
                                 f"{model.max_position_embeddings} ("
                                 + (f"`pretrain.init` {self.pretrain.init})" if init else
                                    f"`pretrain.preset` {self.pretrain.preset or 'tiny'})"))
            cap = self.pretrain.masking.max_predictions_per_seq if self.pretrain.masking is not None else 0
            if cap > s.max_seq_length:
                raise ValueError(f"`pretrain.masking.max_predictions_per_seq` {cap} exceeds `{name}.max_seq_length` "
                                 f"{s.max_seq_length}")
        if len(names := [t.name for t in self.evaluate]) != len(set(names)):
            raise ValueError(f"`evaluate` names a task twice ({', '.join(sorted({n for n in names if names.count(n) > 1}))}): "
                             "each task's results are kept under its name")
        if self.evaluate_steps:
            if not self.evaluate:
                raise ValueError("`evaluate_steps` needs tasks in `evaluate`")
            if bad := [s for s in self.evaluate_steps if not 0 < s < self.pretrain.steps]:
                raise ValueError(f"`evaluate_steps` {bad} must lie between 0 and `pretrain.steps` ({self.pretrain.steps}), exclusive")
            self.pretrain.keep_steps = sorted(set(self.pretrain.keep_steps) | set(self.evaluate_steps))
        return self

    def _init(self) -> InitSource | None:
        """The ``pretrain.init`` model, which brings its tokenizer: without a ``wordpiece.vocab_file``
        of the config's own, the wordpiece stage imports the model's vocab.txt and casing."""
        if self.pretrain.init is None:
            return None
        try:
            init = open_init(self.pretrain.init, self.tracking_uri)
        except (OSError, ValueError) as e:
            raise ValueError(f"`pretrain.init`: {e}") from None
        if self.wordpiece.vocab_file is None and init.vocab is not None:
            self.wordpiece.vocab_file = init.vocab
            if init.lowercase is not None:
                self.wordpiece.cased = not init.lowercase
        return init

    def corpus_paths(self) -> list[str]:
        """The corpus as absolute paths, with the ``corpus_tasks``' training text (written once under
        ``work_dir/task-text/``, named by the training file's content)."""
        tasks = {t.name: t for t in self.evaluate}
        texts = [str(task_corpus(tasks[name], self.work_path() / "task-text")) for name in self.corpus_tasks]
        return [str(resolve(p)) for p in _paths(self.corpus)] + texts

    def shards_config(self, sc: ShardsConfig | None) -> ShardsConfig | None:
        """``sc`` with the corpus's mixture (sources by their files' names), when it has one."""
        if sc is None or not self.corpus or not isinstance(self.corpus[0], CorpusSource):
            return sc
        sources = [SourceShare(name=e.name, weight=e.weight, files=sorted({f.name for f, _ in
                                                                           expand_inputs([str(resolve(p)) for p in e.paths])[0]}))
                   for e in self.corpus]
        return sc.model_copy(update={"sources": sources})

    def work_path(self) -> Path:
        return resolve(self.work_dir)

    def missing_inputs(self) -> list[str]:
        """Files a run would read beyond the corpus (an imported vocabulary, the tasks' files) that are not there."""
        paths = [("wordpiece.vocab_file", self.wordpiece.vocab_file)] if self.wordpiece.vocab_file is not None else []
        paths += [(f"evaluate[{i}].{side}", getattr(t, side)) for i, t in enumerate(self.evaluate) for side in ("train", "eval")]
        return [f"`{key}`: {resolve(p)} does not exist" for key, p in paths if not resolve(p).is_file()]


def preset_names() -> list[str]:
    return json_names("presets")


def pipeline_config(data: Any, overrides: dict[str, Any] | None = None, *, source: str = "") -> PipelineConfig:
    """Plain data (or a config) with ``overrides`` deep-merged into it, validated strictly."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return validate_config(PipelineConfig, deep_merge(data, overrides or {}), source=source, retired=RETIRED)


def load_pipeline_config(preset: str, overrides: dict[str, Any] | None = None, *, source: str = "") -> PipelineConfig:
    """Preset JSON + overrides → validated config (a ``ConfigError`` names each bad key's path, after
    ``source`` or the preset's name). An unknown key in the preset file itself is blamed on the
    file (the preset alone may lack what the overrides supply, such as a corpus that exists)."""
    data = json.loads(named_json("presets", preset))
    try:
        return pipeline_config(data, overrides, source=source or f"preset {preset}" + (" with overrides" if overrides else ""))
    except ConfigError:
        try:
            pipeline_config(data, source=f"preset {preset}")
        except ConfigError as alone:
            if alone.unknown:
                raise ConfigError("\n".join(alone.unknown), alone.unknown) from None
        raise


def with_overrides(cfg: PipelineConfig, overrides: dict[str, Any] | None) -> PipelineConfig:
    """``cfg`` with ``overrides`` deep-merged into it, validated again."""
    return pipeline_config(cfg, overrides, source="overrides") if overrides else cfg
