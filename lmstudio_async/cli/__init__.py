"""The ``lmstudio-async`` command line and the demo."""

from .commands import Output, format_bytes, format_seconds, main

__all__ = ["Output", "format_bytes", "format_seconds", "main"]
