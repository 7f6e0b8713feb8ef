"""Settings from the environment: base directory, user preset and sweep folders."""

from __future__ import annotations

import json

import pytest

from bertpipe.core import settings
from bertpipe.pipeline import load_pipeline_config, preset_names


def test_relative_paths_resolve_under_the_base_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(settings.BASE_DIR, str(tmp_path))
    assert settings.resolve("data/x") == tmp_path / "data" / "x"
    assert settings.resolve("/abs/x").as_posix() == "/abs/x"
    monkeypatch.delenv(settings.BASE_DIR)
    monkeypatch.chdir(tmp_path)
    assert settings.resolve("y") == tmp_path / "y"


def test_a_user_preset_folder_adds_and_shadows_presets(tmp_path, monkeypatch):
    shipped = preset_names()
    assert {"tiny", "base", "large"} <= set(shipped)
    (tmp_path / "mine.json").write_text(json.dumps({"corpus": ["corpus.txt"], "wordpiece": {"vocab_size": 777}}))
    (tmp_path / "tiny.json").write_text(json.dumps({"corpus": ["corpus.txt"], "experiment": "shadowed"}))
    (tmp_path / "corpus.txt").write_text("a line of text\n")
    monkeypatch.setenv(settings.PRESET_DIRS, str(tmp_path))
    monkeypatch.setenv(settings.BASE_DIR, str(tmp_path))
    assert preset_names() == sorted({*shipped, "mine"})
    assert load_pipeline_config("mine").wordpiece.vocab_size == 777
    assert load_pipeline_config("tiny").experiment == "shadowed"
    with pytest.raises(ValueError, match="unknown preset 'nope'; available: .*mine"):
        load_pipeline_config("nope")
