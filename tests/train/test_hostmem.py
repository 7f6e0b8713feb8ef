"""Freed memory kept in the heap while a training runs, and given back after it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import numpy as np, psutil
from bertpipe.train.hostmem import kept_freed_memory
rss = lambda: psutil.Process().memory_info().rss >> 20
base = rss()
with kept_freed_memory() as raised:
    blocks = [np.ones(50 << 17) for _ in range(8)]  # 8 blocks of 50 MiB: from the heap while the block runs
    del blocks
    inside = rss()
print(raised, inside - base, rss() - base)
"""


def test_the_heap_is_kept_while_training_and_given_back_after():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout.split()
    raised, inside, after = out[0] == "True", int(out[1]), int(out[2])
    assert raised and inside > 300, out  # freed, but kept in the heap for the next step
    assert after < 100, out  # given back once the training is over (a sweep trains many models in one process)


GROWN = """
import numpy as np, psutil
from bertpipe.train.hostmem import kept_freed_memory, trim_if_grown
rss = lambda: psutil.Process().memory_info().rss >> 20
with kept_freed_memory():
    first = trim_if_grown(100 << 20)  # the first call only measures
    blocks = [np.ones(50 << 17) for _ in range(8)]
    del blocks
    kept = rss()
    unmoved = trim_if_grown(1 << 40)  # grown, but not by that much
    trimmed = trim_if_grown(100 << 20)
    print(first, unmoved, trimmed, kept - rss())
"""


def test_a_training_whose_heap_grew_gives_the_free_part_back():
    out = subprocess.run([sys.executable, "-c", GROWN], capture_output=True, text=True, check=True).stdout.split()
    assert out[:3] == ["False", "False", "True"], out
    assert int(out[3]) > 300, out  # the 400 MiB freed inside the heap went back to the system
