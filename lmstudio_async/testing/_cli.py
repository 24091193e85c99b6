"""Command line for the stand-in: ``python -m lmstudio_async.testing``.

``add_arguments`` / ``server_from_args`` / ``serve`` are reusable by other CLIs
(e.g. ``lmstudio-async serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
import threading
from collections.abc import Callable

from ._server import DEFAULT_PORT, StandInServer

__all__ = ["add_arguments", "main", "serve", "server_from_args"]

READY_LINE = "LM Studio stand-in listening on {url}"

# Upper bounds of the numeric options: far beyond any useful value, low enough that the
# server's integer and JSON arithmetic stays exact (inf or 1e308 overflowed it).
MAX_GB = 1_000_000.0  # 1 PB
MAX_SECONDS = 86_400.0  # a simulated load of a day
MAX_TTL_SECONDS = 365 * 86_400.0
MAX_RATE = 1_000_000.0  # tokens or MB per second


def _number(
    unit: str, *, low: float | None, high: float, low_inclusive: bool = False
) -> Callable[[str], float]:
    """An argparse ``type``: a finite number of ``unit`` in (``low``, ``high``] (``[low,
    high]`` with ``low_inclusive``; no lower bound with ``low=None``). argparse puts the
    option's name before the message and exits with status 2."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {unit}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number of {unit}, got {text!r}")
        if low is not None and (value < low or (value == low and not low_inclusive)):
            bound = f">= {low:g}" if low_inclusive else "positive" if low == 0 else f"> {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value:g}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:.15g} {unit}, got {value:g}")
        return value

    return parse


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {port}")
    return port


def _device(text: str) -> tuple[str, float]:
    """``NAME:GB`` → ``(name, gb)`` for ``--device``."""
    name, sep, size = text.rpartition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:GB (e.g. gpu-box:48), got {text!r}")
    try:
        gb = float(size)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"the memory of device {name!r} must be a number of GB, got {size!r}"
        ) from None
    if not math.isfinite(gb):
        raise argparse.ArgumentTypeError(
            f"the memory of device {name!r} must be a finite number of GB, got {size!r}"
        )
    if not gb > 0:
        raise argparse.ArgumentTypeError(f"the memory of device {name!r} must be positive")
    if gb > MAX_GB:
        raise argparse.ArgumentTypeError(
            f"the memory of device {name!r} must be at most {MAX_GB:.15g} GB, got {size!r}"
        )
    return name, gb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the stand-in's options to ``parser``."""
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}, LM Studio's first default; 0 picks a free port)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument(
        "--api-token",
        metavar="TOKEN",
        default=None,
        help="require this LM Studio API token (sk-lm-<8 alnum>:<20 alnum>) from clients",
    )
    parser.add_argument(
        "--catalog",
        metavar="FILE",
        default=None,
        help="JSON list of ModelInfo objects replacing the built-in downloaded-model catalogue",
    )
    parser.add_argument(
        "--memory-gb",
        type=_number("GB", low=0, high=MAX_GB),
        default=24.0,
        help="simulated memory budget in GB (default 24)",
    )
    parser.add_argument(
        "--device",
        dest="devices",
        type=_device,
        action="append",
        default=[],
        metavar="NAME:GB",
        help="simulate an LM Link remote device NAME with its own GB memory budget "
        "(repeatable); loads with deviceIdentifier NAME land there",
    )
    parser.add_argument(
        "--load-seconds",
        type=_number("seconds", low=0, low_inclusive=True, high=MAX_SECONDS),
        default=0.3,
        help="simulated time per model load in seconds (default 0.3)",
    )
    parser.add_argument(
        "--no-jit-evict",
        dest="jit_evict",
        action="store_false",
        help="keep other JIT-loaded models when a new JIT load starts",
    )
    parser.add_argument(
        "--no-jit",
        dest="jit",
        action="store_false",
        help="HTTP requests naming a model that is not loaded fail instead of loading it",
    )
    parser.add_argument(
        "--jit-ttl",
        # Not positive: refused by the server's own check (also exit status 2).
        type=_number("seconds", low=None, high=MAX_TTL_SECONDS),
        metavar="SECONDS",
        default=3600.0,
        help="idle TTL of models loaded just in time by HTTP requests without a ttl "
        "(default 3600, LM Studio's 60 minutes)",
    )
    parser.add_argument(
        "--presets",
        metavar="FILE",
        default=None,
        help="JSON list of prediction presets replacing the built-in ones (docs/stand-in.md)",
    )
    parser.add_argument(
        "--hub",
        metavar="FILE",
        default=None,
        help="JSON list of downloadable repositories replacing the built-in simulated hub",
    )
    parser.add_argument(
        "--download-mb-per-second",
        type=_number("MB per second", low=0, high=MAX_RATE),
        default=1000.0,
        help="simulated download speed in MB per second (default 1000)",
    )
    parser.add_argument(
        "--tokens-per-second",
        type=_number("tokens per second", low=0, high=MAX_RATE),
        default=2000.0,
        help="simulated generation speed in tokens per second (default: 2000)",
    )


def server_from_args(ns: argparse.Namespace) -> StandInServer:
    """Build a (not yet started) server; raises ``ValueError`` with a clear message."""
    devices: dict[str, float] = {}
    for name, gb in getattr(ns, "devices", None) or []:
        if name in devices:
            raise ValueError(f"--device {name!r} was given twice")
        devices[name] = gb
    return StandInServer(
        ns.port,
        api_token=ns.api_token,
        catalog=ns.catalog,
        memory_gb=ns.memory_gb,
        load_seconds=ns.load_seconds,
        jit_evict=ns.jit_evict,
        host=ns.host,
        tokens_per_second=ns.tokens_per_second,
        jit=ns.jit,
        jit_ttl=ns.jit_ttl,
        devices=devices,
        presets=getattr(ns, "presets", None),
        hub=getattr(ns, "hub", None),
        download_mb_per_second=getattr(ns, "download_mb_per_second", 1000.0),
    )


def ready_url(server: StandInServer) -> str:
    """``http://HOST:PORT`` of a started server, with an IPv6 HOST in brackets (RFC 3986), so
    that the ready line can be pasted as a client's host."""
    return server.url


async def serve(server: StandInServer, *, announce: bool = True) -> None:
    """Run ``server`` until SIGINT/SIGTERM (or cancellation), printing the ready line."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
    try:
        await server.start()
        try:
            if announce:
                print(READY_LINE.format(url=ready_url(server)), flush=True)
            await stop.wait()
        finally:
            await server.stop()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lmstudio_async.testing",
        description="Run a stand-in LM Studio server (model management API) for tests and demos.",
    )
    add_arguments(parser)
    ns = parser.parse_args(argv)
    try:
        server = server_from_args(ns)
    except ValueError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(server))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"{parser.prog}: error: cannot listen on {ns.host}:{ns.port}: {exc}", file=sys.stderr)
        return 1
    return 0
