"""Every stage fingerprint of every shipped preset and sweep, pinned: a refactor that changes
one would silently orphan every cached output (and its MLflow history) that carries it.

``tests/fixtures/fingerprints.json`` was computed with the code at commit c90ae23, before the
stage-protocol refactor (`minilm-shared` and `adapt` were pinned when they were added): once with the presets as shipped (their corpus files hashed) and
once with the corpus replaced by the bundled ``data/sample`` (so the whole chain is checked
also where ``../shared/data`` is absent). Fine-tuning fingerprints hash a checkpoint and task
files; they are pinned with fixed placeholder strings in place of those content hashes.
The ``pretrain`` pins were recomputed, and only they changed, when the stage went to version 2
(one sample order per global batch: runs are named by their global batch, not its split).
"""

from __future__ import annotations

import json

import pytest

from bertpipe.core.keys import deep_merge
from bertpipe.experiments.sweep import load_sweep, sweep_names, validate
from bertpipe.model.init import open_init
from bertpipe.pipeline import load_pipeline_config, preset_names, stage_fingerprints
from bertpipe.tasks.finetune import CAUSAL_MARK, FinetuneStage
from tests.conftest import FIXTURES, SHARED

PINS = json.loads((FIXTURES / "fingerprints.json").read_text())
PLACEHOLDER = PINS["placeholder_inputs"]
CORPUS = {"as_shipped": {}, "on_sample_corpus": {"corpus": ["data/sample"]}}
TASK_TEXT = {"minilm-shared"}  # presets pretraining on the shared tasks' text: they need it for any variant


def fingerprints(cfg) -> dict:
    causal = bool(cfg.pretrain.architecture(open_init(cfg.pretrain.init) if cfg.pretrain.init else None).causal)
    tasks = {}
    for t in cfg.evaluate:
        names = PLACEHOLDER if t.config.init == "checkpoint" else PLACEHOLDER[1:]
        tasks[t.name] = FinetuneStage.fingerprint_of(t.config, list(names) + ([CAUSAL_MARK] if causal else []))
    return {**stage_fingerprints(cfg), "finetune": tasks}


@pytest.mark.parametrize("variant", list(CORPUS))
@pytest.mark.parametrize("name", sorted(PINS["as_shipped"]["presets"]))
def test_preset_fingerprints_are_pinned(name, variant):
    assert sorted(PINS[variant]["presets"]) == preset_names()
    if (variant == "as_shipped" or name in TASK_TEXT) and name.endswith("-shared") and not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: preset {name} reads the shared corpora")
    assert fingerprints(load_pipeline_config(name, CORPUS[variant])) == PINS[variant]["presets"][name]


@pytest.mark.parametrize("variant", list(CORPUS))
@pytest.mark.parametrize("name", sorted(PINS["as_shipped"]["sweeps"]))
def test_sweep_fingerprints_are_pinned(name, variant):
    assert sorted(PINS[variant]["sweeps"]) == sweep_names()
    spec = load_sweep(name)
    if (variant == "as_shipped" or spec.preset in TASK_TEXT) and spec.preset.endswith("-shared") and not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: sweep {name} reads the shared corpora")
    spec = spec.model_copy(update={"overrides": deep_merge(spec.overrides, CORPUS[variant])})
    got = {f"{v.name()} / seed {seed}": fingerprints(cfg) for v, seed, cfg in validate(spec)}
    assert got == PINS[variant]["sweeps"][name]
