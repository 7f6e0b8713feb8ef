"""A task's training text, labels dropped, as a corpus for task-adaptive pretraining."""

from __future__ import annotations

import json

import pytest

from bertpipe.tasks.config import EvalTask, FinetuneConfig
from bertpipe.tasks.text import task_corpus, task_documents
from tests.conftest import FIXTURES

TASKS = FIXTURES / "tasks"


def task(kind: str, file: str) -> EvalTask:
    return EvalTask(name=kind, train=str(TASKS / file), eval=str(TASKS / file), config=FinetuneConfig(task=kind))


def test_each_task_type_gives_its_text_without_labels():
    single = task_documents(task("classify", "finefoods.tsv"))
    lines = (TASKS / "finefoods.tsv").read_text().splitlines()[1:]
    assert single == [ln.split("\t")[0] for ln in lines if ln.split("\t")[0].strip()]
    pair = task_documents(task("pair", "bible.tsv"))
    first = (TASKS / "bible.tsv").read_text().splitlines()[1].split("\t")
    assert pair[0] == f"{first[3]}\n{first[4]}" and not any(d.startswith(("0\t", "1\t")) for d in pair)
    tags = task_documents(task("tag", "wnut16.conll"))
    block = (TASKS / "wnut16.conll").read_text().split("\n\n")[0].splitlines()
    assert tags[0] == " ".join(ln.split("\t")[0] for ln in block) and tags[0].startswith("@paulwalk It 's the view")
    qa = task_documents(task("qa", "squad.json"))
    doc = json.loads((TASKS / "squad.json").read_text())
    contexts = [p["context"] for a in doc["data"] for p in a["paragraphs"]]
    assert len(qa) == len(set(contexts)) and qa[0].startswith(contexts[0] + "\n")
    assert all("answer_start" not in d for d in qa)


def test_the_corpus_file_is_named_by_content_and_written_once(tmp_path):
    t = task("classify", "finefoods.tsv")
    out = task_corpus(t, tmp_path)
    assert out.name.startswith("classify-classify-v1-") and out.suffix == ".jsonl"
    docs = [json.loads(ln)["text"] for ln in out.read_text().splitlines()]
    assert docs == task_documents(t)
    mtime = out.stat().st_mtime_ns
    assert task_corpus(t, tmp_path) == out and out.stat().st_mtime_ns == mtime
    copy = tmp_path / "copy.tsv"
    copy.write_text((TASKS / "finefoods.tsv").read_text().replace("save your money", "keep your money"))
    other = task_corpus(t.model_copy(update={"train": str(copy)}), tmp_path)
    assert other != out and not list(tmp_path.glob(".*"))


def test_a_bad_task_file_names_the_file():
    bad = task("pair", "finefoods.tsv")  # a single-sentence file read as pairs
    with pytest.raises(ValueError, match=r"finefoods\.tsv:1: header"):
        task_documents(bad)
