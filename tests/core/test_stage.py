"""The stage protocol on a small real stage: fingerprints, units, publication, reuse, failure."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bertpipe.core.stage import Stage, expect_fingerprint, in_order, run_stage
from bertpipe.core.stagedir import is_complete, read_manifest


class CountConfig(BaseModel):
    word: str = "the"
    workers: int = 1  # does not change the output


class CountStage(Stage[CountConfig]):
    """Counts a word in each input file: one unit per file, a total when published."""

    name, version = "count", 1

    def __init__(self, cfg: CountConfig, files: list[Path], fail_on: str | None = None) -> None:
        super().__init__(cfg)
        self.files, self.fail_on, self.workers = files, fail_on, cfg.workers

    @classmethod
    def fingerprint_config(cls, cfg: CountConfig) -> dict[str, Any]:
        return cfg.model_dump(exclude={"workers"})

    def upstream(self) -> list[str]:
        return [f.read_text() for f in self.files]  # content stands in for a hash here

    def plan(self, out: Path) -> list[tuple[int, Path]]:
        return [(i, f) for i, f in enumerate(self.files)]

    def run_unit(self, unit: tuple[int, Path]) -> dict[str, Any]:
        i, f = unit
        if f.name == self.fail_on:
            raise ValueError(f"{f}: unreadable")
        return {"file": f.name, "count": f.read_text().split().count(self.cfg.word)}

    def publish(self, out: Path, reports: list[dict[str, Any]]) -> dict[str, Any]:
        (out / "total.txt").write_text(str(sum(r["count"] for r in reports)))
        return {"files": reports}


@pytest.fixture
def files(tmp_path) -> list[Path]:
    out = []
    for name, text in (("a.txt", "the cat and the dog"), ("b.txt", "a bird"), ("c.txt", "the end")):
        (tmp_path / name).write_text(text)
        out.append(tmp_path / name)
    return out


def test_units_run_and_publish_into_a_fingerprinted_directory(files, tmp_path):
    stage = CountStage(CountConfig(), files)
    res = run_stage(stage, tmp_path / "root")
    assert res.path == tmp_path / "root" / stage.fingerprint() and is_complete(res.path) and not res.cached
    m = read_manifest(res.path)
    assert (m["stage"], m["version"], m["fingerprint"]) == ("count", 1, res.fingerprint)
    assert [r["count"] for r in m["files"]] == [2, 0, 1] and (res.path / "total.txt").read_text() == "3"
    again = run_stage(CountStage(CountConfig(workers=4), files), tmp_path / "root")
    assert again.cached and again.path == res.path and again.manifest == m
    assert (tmp_path / "root" / "latest").read_text().strip() == res.fingerprint


def test_the_fingerprint_follows_config_inputs_and_version(files):
    base = CountStage(CountConfig(), files).fingerprint()
    assert CountStage.fingerprint_of(CountConfig(), [f.read_text() for f in files]) == base
    assert CountStage(CountConfig(word="a"), files).fingerprint() != base
    assert CountStage(CountConfig(), files[:2]).fingerprint() != base
    files[1].write_text("the bird")
    assert CountStage(CountConfig(), files).fingerprint() != base

    class CountStage2(CountStage):
        version = 2

    assert CountStage2(CountConfig(), files).fingerprint() != CountStage(CountConfig(), files).fingerprint()


def test_any_mapper_gives_the_same_output(files, tmp_path):
    def threads(fn, units):
        with ThreadPoolExecutor(3) as ex:
            return list(ex.map(fn, units))

    a = run_stage(CountStage(CountConfig(), files), tmp_path / "a", map_units=in_order)
    b = run_stage(CountStage(CountConfig(), files), tmp_path / "b", map_units=threads)
    c = run_stage(CountStage(CountConfig(workers=2), files), tmp_path / "c")  # processes
    assert a.manifest == b.manifest == c.manifest


def test_a_failing_unit_publishes_nothing(files, tmp_path):
    with pytest.raises(ValueError, match="b.txt: unreadable"):
        run_stage(CountStage(CountConfig(), files, fail_on="b.txt"), tmp_path / "root")
    assert [p.name for p in (tmp_path / "root").iterdir() if not p.name.endswith(".lock")] == []


class SlowCountStage(CountStage):
    """CountStage whose units take a while and are recorded, to catch duplicate builds."""

    calls: list[str] = []

    def run_unit(self, unit: tuple[int, Path]) -> dict[str, Any]:
        SlowCountStage.calls.append(unit[1].name)
        time.sleep(0.2)
        return super().run_unit(unit)


def test_concurrent_builders_of_one_output_build_it_once(files, tmp_path):
    SlowCountStage.calls = []
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: run_stage(SlowCountStage(CountConfig(), files), tmp_path / "root"), range(3)))
    assert sorted(SlowCountStage.calls) == ["a.txt", "b.txt", "c.txt"]  # each unit ran once, not once per builder
    assert sorted(r.cached for r in results) == [False, True, True]
    assert len({r.path for r in results}) == 1 and all(r.manifest == results[0].manifest for r in results)
    assert not list((tmp_path / "root").glob("*.lock"))  # removed once the output is complete


def test_a_runner_refuses_an_output_it_did_not_predict(files, tmp_path):
    res = run_stage(CountStage(CountConfig(), files), tmp_path)
    assert expect_fingerprint(res, res.fingerprint) is res
    with pytest.raises(RuntimeError, match="the count stage produced .* where 0123 was predicted"):
        expect_fingerprint(res, "0123")
