"""bertpipe's benchmarks: ``bertpipe bench ...`` (or ``python -m benchmarks ...``) runs them.

Not part of the ``bertpipe`` wheel: they import the peers they measure against (transformers,
datasets, wikiextractor, ...) and read data from the source checkout (``benchmarks.paths``).
A checkout installs them with ``make`` or ``pip install -e ./benchmarks``.
"""
