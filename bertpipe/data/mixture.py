"""Source mixtures: each corpus source's share of the training tokens, by deterministic up- or
down-sampling of its training documents in the shards stage.

Purpose
    BERT trained on BooksCorpus (800M words) and Wikipedia (2,500M); later encoders weight
    their sources on purpose (a small domain corpus up-sampled, a large web crawl down). A
    ``ShardsConfig.sources`` entry names a source, the input files that make it (patterns over
    the documents' ``source`` column, the input file's name) and its weight; the weights'
    shares are the targets for the training tokens.

How
    The shards stage plans blocks after the held-out split, so held-out documents are never
    copied and a copy never lands on the other side. Per source it counts the training
    documents' characters and estimates tokens per character by tokenizing up to
    ``SAMPLE_CHARS`` of them (an even sample over the source, seeded); the rate of source s is
    ``share_s x total tokens / tokens_s`` (the total stays as it was). A training document
    then appears ``floor(rate)`` times, and a subset of the source holding ``rate -
    floor(rate)`` of its characters once more, chosen in a seeded hash order of the documents
    (``copies``): within one document of the target, the same whatever the workers. Exact
    deduplication happened at ingest, before: copies made here are never deduplicated away.
    Each unit counts its input tokens per source; the manifest reports them
    (``tokens_by_source``) beside the targets.

Trade-offs
    The token estimate from a sample is what keeps planning cheap (tokenizing everything twice
    would double the stage); its error is the sample's, measured in the tests (within 2% on
    two real sources). Copies of a document are separate documents to the pair sampler, so
    an up-sampled source's sentence pairs repeat across copies as they would across epochs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SAMPLE_CHARS = 2_000_000  # per source, for its tokens per character


class SourceShare(BaseModel):
    """One source of a mixture: its name, its files and its weight."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the source's name (reported per source in the manifest)")
    files: list[str] = Field(description="input file names (or fnmatch patterns) whose documents make this source")
    weight: float = Field(gt=0, description="relative share of the training tokens")


def source_of(file_name: str, sources: list[SourceShare]) -> int:
    """The index of the source a document from ``file_name`` belongs to (the first that matches)."""
    for i, s in enumerate(sources):
        if any(fnmatch.fnmatchcase(file_name, pattern) for pattern in s.files):
            return i
    raise ValueError(f"documents from {file_name!r} belong to no source of the mixture "
                     f"({', '.join(f'{s.name}: {s.files}' for s in sources)})")


def sample_rows(n: int, chars: np.ndarray, seed: int) -> np.ndarray:
    """Indices of an even, seeded sample of ``n`` documents holding about ``SAMPLE_CHARS``."""
    k = n if chars.sum() <= SAMPLE_CHARS else max(1, int(n * SAMPLE_CHARS / chars.sum()))
    return np.sort(np.random.default_rng([seed, 7]).choice(n, k, replace=False))


def rates(tokens: np.ndarray, sources: list[SourceShare]) -> np.ndarray:
    """Per source, how many times each training document is used (on average)."""
    if (tokens <= 0).any():
        empty = [s.name for s, t in zip(sources, tokens, strict=True) if t <= 0]
        raise ValueError(f"sources {empty} have no training text: a mixture needs every source")
    share = np.array([s.weight for s in sources]) / sum(s.weight for s in sources)
    return share * tokens.sum() / tokens


def copies(doc_index: np.ndarray, chars: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """How many times each of a source's training documents appears at ``rate``: ``floor(rate)``
    times each, plus once more for a subset holding ``rate - floor(rate)`` of the source's
    characters, taken in a seeded hash order of the documents (so no part of the corpus is
    favoured), each while it brings the total nearer the target."""
    out = np.full(len(chars), math.floor(rate), np.int64)
    target, taken = (rate - math.floor(rate)) * chars.sum(), 0
    order = sorted(range(len(chars)), key=lambda i: hashlib.blake2b(f"{seed}:mix:{doc_index[i]}".encode(), digest_size=8).digest())
    for i in order:
        if taken + chars[i] / 2 <= target:
            out[i] += 1
            taken += chars[i]
    return out
