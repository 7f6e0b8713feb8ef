"""bertpipe: pretrain and evaluate BERT-style encoders on your own corpus.

The library never imports Prefect: every stage is a plain typed function taking one
pydantic config, so tests, the CLI, notebooks and the Prefect flows in ``flows/`` call the
same code.
"""

__version__ = "0.1.0"
