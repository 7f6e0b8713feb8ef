"""Where the benchmarks find their data; the one place that knows the checkout's layout.

``CHECKOUT`` is the source checkout this folder lies in (``benchmarks/`` is at its top level),
``FIXTURES`` its test fixtures, ``SAMPLE`` the bundled sample corpus and ``SHARED_DATA`` the
shared data sets next to the project folder (``<checkout>/../shared/data``), or wherever
``$BERTPIPE_SHARED_DATA`` points. A benchmark that needs absent data says so and stops.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
FIXTURES = CHECKOUT / "tests" / "fixtures"
SAMPLE = CHECKOUT / "data" / "sample"  # the bundled corpus of `make run`, 3.3M characters
SHARED_DATA = Path(os.environ.get("BERTPIPE_SHARED_DATA") or CHECKOUT.parent / "shared" / "data")
CORPORA = SHARED_DATA / "corpora"  # gutenberg/*.txt and sotu.jsonl.gz
