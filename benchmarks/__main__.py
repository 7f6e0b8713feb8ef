"""``python -m benchmarks ARGS`` is ``bertpipe bench ARGS``."""

import sys

from bertpipe.cli.main import main

sys.argv[0] = "bertpipe"  # usage lines read `bertpipe bench ...`, the same command
main(["bench", *sys.argv[1:]])
