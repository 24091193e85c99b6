"""Benchmarks: this SDK vs the official ``lmstudio`` SDK vs a bare aiohttp loop.

Run ``python -m benchmarks`` (``--quick`` for a smoke run, ``--json PATH`` for the output
file). Everything is measured in one process against one stand-in server that the
benchmark starts in a separate process; see ``docs/performance.md``.
"""
