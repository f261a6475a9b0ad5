"""``python -m pipeline``: the ``anonymize`` command line."""

from pipeline.cli import main

main()
