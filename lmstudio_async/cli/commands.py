"""The ``lmstudio-async`` command line (also ``python -m lmstudio_async``).

Subcommands: ``ls``, ``ps``, ``load``, ``unload``, ``get`` (download a model),
``serve`` (the bundled stand-in server) and ``demo``. Uses
`rich <https://rich.readthedocs.io>`_ for tables and progress bars when it is installed
(``pip install lmstudio-async[cli]``) and stdout is a terminal; plain text otherwise.

Exit codes: 0 success, 1 a failure reported by the SDK (printed as
``error: <message>``), 2 bad arguments, 130 interrupted (Ctrl-C), 141 the reader of stdout
went away (e.g. ``| head``; 128 + SIGPIPE, as for other command-line tools).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import importlib.util
import json
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Final, TextIO

import msgspec

from .. import __version__
from .._async.client import LLM, AsyncClient, EmbeddingModel
from .._io.transport import ENV_API_TOKEN, credentials, parse_api_host
from .._protocol.info import ModelInfo, ModelInstanceInfo, resolve_model_key
from ..config import EmbeddingLoadConfig, GpuOffload, LlmLoadConfig
from ..errors import LMStudioError, LMStudioValueError, ModelNotFoundError

__all__ = ["Output", "build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

ENV_API_HOST: Final = "LMSTUDIO_API_HOST"

CANCEL_CONFIRM_SECONDS: Final = 3.0
"""After Ctrl-C stopped a load or download: how long to wait for LM Studio to answer the
round trip that shows it has seen the cancel, before saying it could not be confirmed."""

MAX_TTL_SECONDS: Final = 365 * 86_400
"""The largest ``--ttl`` (a year); without ``--ttl`` an instance has no TTL at all."""

MAX_DEMO_LOAD_SECONDS: Final = 60.0


# --- terminal output ---------------------------------------------------------------------------


def rich_available() -> bool:
    """True if the optional ``rich`` package can be imported."""
    return importlib.util.find_spec("rich") is not None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_bytes(size: float | None) -> str:
    """``1_321_082_528`` -> ``"1.23 GiB"``."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_seconds(seconds: float | None) -> str:
    """``None`` -> ``"-"``, ``75`` -> ``"1m15s"``."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Output:
    """Writes to ``stream`` (default ``sys.stdout``): rich when available and a terminal,
    plain text otherwise. ``fancy`` forces one or the other."""

    def __init__(self, stream: TextIO | None = None, *, fancy: bool | None = None) -> None:
        self.stream: TextIO = stream if stream is not None else sys.stdout
        if fancy is None:
            fancy = _isatty(self.stream) and rich_available()
        self.fancy = fancy
        self._console: Any = None
        if fancy:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)

    def line(self, text: str = "", style: str | None = None) -> None:
        """Print one line; ``style`` is a rich style, ignored in plain mode."""
        if self._console is not None:
            self._console.print(text, style=style, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def raw(self, text: str) -> None:
        """Write ``text`` and a newline as is, never through rich, which wraps long lines at
        the terminal's width (and so would break ``--json`` output)."""
        self.stream.write(text + "\n")
        self.stream.flush()

    def heading(self, text: str) -> None:
        if self._console is not None:
            self._console.print()
            self._console.rule(text, align="left", style="cyan")
        else:
            print(f"\n== {text}", file=self.stream, flush=True)

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if self._console is not None:
            from rich.measure import Measurement
            from rich.table import Table

            table = Table(*columns, box=None, header_style="bold", pad_edge=False)
            for row in rows:
                table.add_row(*row)
            # Rich shrinks a table wider than the terminal by cutting cells short ("text-
            # embedding-nom…"), and the keys and identifiers must stay whole to be copied
            # into `load` / `unload`: render it at its natural width instead; the terminal
            # wraps the long lines, as it does in plain mode.
            console = self._console
            unbounded = console.options.update(width=1_000_000)
            natural = Measurement.get(console, unbounded, table).maximum
            width = console.width
            try:
                console.width = max(width, natural)
                console.print(table, crop=False)
            finally:
                console.width = width
            return
        widths = [len(c) for c in columns]
        for row in rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        for row in [list(columns), *rows]:
            cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
            print("  ".join(cells).rstrip(), file=self.stream)
        self.stream.flush()

    @contextlib.contextmanager
    def progress(self, label: str) -> Iterator[Callable[[float], None]]:
        """A progress display for one load; yields an ``on_progress(fraction)`` callback.

        Rich mode draws a bar; plain mode prints ``label: 0% 25% 50% 75% 100%`` on one line.
        """
        if self._console is not None:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn

            with Progress(
                "  {task.description}",
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=self._console,
                transient=False,
            ) as bar:
                task = bar.add_task(label, total=1.0)

                def update(fraction: float) -> None:
                    bar.update(task, completed=fraction)

                yield update
            return
        printed: list[int] = []
        self.stream.write(f"  {label}:")
        self.stream.flush()

        def report(fraction: float) -> None:
            step = int(fraction * 4) * 25  # print at 0, 25, 50, 75, 100 %
            if not printed or step > printed[-1]:
                printed.append(step)
                self.stream.write(f" {step}%")
                self.stream.flush()

        try:
            yield report
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | _Interrupted)
            self.stream.write(" cancelled\n" if cancelled else " failed\n")
            self.stream.flush()
            raise
        self.stream.write("\n")
        self.stream.flush()


class _Interrupted(Exception):
    """Ctrl-C cancelled a load."""


def error(message: str) -> None:
    """Print ``error: message`` to stderr (nothing if stderr is gone)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"error: {message}", file=sys.stderr, flush=True)


def cli_wording(message: str) -> str:
    """An SDK message with its hints about keyword arguments (``pass api_host=``) reworded
    for this command line (``pass --host``)."""
    return message.replace("api_host=", "--host").replace("api_token=", "--api-token")


def _discard_stdout() -> None:
    """The reader of stdout went away: point stdout at /dev/null, so that the flush when
    the interpreter exits does not fail as well (the recipe of the ``signal`` docs)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# --- argument parsing ------------------------------------------------------------------------


def _gpu(value: str) -> GpuOffload:
    if value in ("max", "off"):
        return value  # type: ignore[return-value]
    try:
        ratio = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a ratio between 0 and 1, 'max' or 'off', got {value!r}"
        ) from None
    if not 0.0 <= ratio <= 1.0:
        raise argparse.ArgumentTypeError(f"the GPU ratio must be between 0 and 1, got {ratio:g}")
    return ratio


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {number}")
    return number


def _context_length(value: str) -> int | str:
    return "max" if value.strip().lower() == "max" else _positive_int(value)


def _finite_seconds(value: str) -> float:
    """A finite number of seconds (``nan`` and ``inf`` are refused: they stall timers)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {value!r}")
    return number


def _seconds(value: str) -> float:
    number = _finite_seconds(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {number:g}")
    if number > MAX_TTL_SECONDS:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_TTL_SECONDS} seconds (365 days; leave it out for no TTL), got {number:g}"
        )
    return number


def _demo_load_seconds(value: str) -> float:
    number = _finite_seconds(value)
    if not 0 <= number <= MAX_DEMO_LOAD_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected between 0 and {MAX_DEMO_LOAD_SECONDS:g} seconds, got {number:g}"
        )
    return number


def _text(value: str) -> str:
    """A non-blank string (a model key, an identifier, a search, a quantization)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"must not be empty, got {value!r}")
    return value


def _host(value: str) -> str:
    try:
        parse_api_host(value)
    except LMStudioValueError as exc:
        raise argparse.ArgumentTypeError(cli_wording(str(exc))) from None
    return value


def _token(value: str) -> str:
    """An API token in LM Studio's form (checked before connecting; never echoed)."""
    try:
        credentials(value)
    except LMStudioValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("api_token is ")) from None
    return value


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    """The stand-in server's own options (reused, not duplicated). Imports the whole
    stand-in, so only when the command line may run ``serve``."""
    from ..testing import add_arguments

    add_arguments(parser)


def build_parser(*, serve_options: bool = True) -> argparse.ArgumentParser:
    """The argparse parser of ``lmstudio-async``.

    ``serve_options=False`` leaves the stand-in's options out of ``serve`` (it then takes
    none), which spares importing the stand-in for the other commands.
    """
    parser = argparse.ArgumentParser(
        prog="lmstudio-async",
        description="Manage models in LM Studio's memory (and run a stand-in LM Studio).",
        epilog="Exit codes: 0 ok, 1 error, 2 bad arguments, 130 interrupted (Ctrl-C), "
        "141 the reader of the output went away (e.g. `| head`).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Not dest="host" / "api_token": those are the options of `serve` (the stand-in's own),
    # which would overwrite these in the namespace.
    parser.add_argument(
        "--host",
        dest="client_host",
        metavar="HOST",
        type=_host,
        default=None,
        help=f"LM Studio host:port (default: ${ENV_API_HOST}, else probe the local ports)",
    )
    parser.add_argument(
        "--api-token",
        dest="client_api_token",
        metavar="API_TOKEN",
        type=_token,
        default=None,
        help="API token (default: $LMSTUDIO_API_TOKEN)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ls = sub.add_parser("ls", help="list downloaded models")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")

    ps = sub.add_parser("ps", help="list loaded model instances")
    ps.add_argument("--json", action="store_true", help="print JSON instead of a table")

    load = sub.add_parser("load", help="load a new model instance")
    load.add_argument("key", metavar="KEY", type=_text, help="model key (see `ls`)")
    load.add_argument(
        "--identifier", metavar="ID", type=_text, help="identifier of the new instance"
    )
    load.add_argument(
        "--context-length",
        "-c",
        type=_context_length,
        metavar="N|max",
        help="context window in tokens, or max (the largest the model supports)",
    )
    load.add_argument(
        "--gpu", type=_gpu, metavar="RATIO|max|off", help="GPU offload: 0..1, max or off"
    )
    load.add_argument(
        "--ttl",
        type=_seconds,
        metavar="SECONDS",
        help="unload after this many idle seconds (at most 365 days)",
    )
    load.add_argument(
        "--estimate-only", action="store_true", help="print the memory estimate; do not load"
    )

    unload = sub.add_parser("unload", help="unload model instances")
    unload.add_argument(
        "identifier", nargs="?", metavar="ID", type=_text, help="instance identifier"
    )
    unload.add_argument("--all", action="store_true", help="unload every loaded instance")

    get = sub.add_parser("get", help="search the catalogue and download a model")
    get.add_argument(
        "key", metavar="KEY", type=_text, help="what to search for (a model name or key)"
    )
    get.add_argument(
        "--quant",
        metavar="Q",
        type=_text,
        help="download option with this quantization (e.g. Q4_K_M)",
    )

    serve = sub.add_parser(
        "serve",
        help="run the bundled stand-in LM Studio server",
        description="Run the bundled stand-in LM Studio server until Ctrl-C. The global "
        "--api-token also sets the token it requires; the global --host does not apply "
        "(use `serve --host INTERFACE --port N`).",
    )
    if serve_options:
        _add_serve_options(serve)

    demo = sub.add_parser(
        "demo",
        help="a tour of the API against an in-process stand-in",
        description="A tour of the API against a stand-in LM Studio started in this process "
        "(the global --host and --api-token do not apply).",
    )
    demo.add_argument(
        "--load-seconds",
        type=_demo_load_seconds,
        default=0.4,
        metavar="S",
        help=f"simulated load time of the stand-in (default 0.4, at most "
        f"{MAX_DEMO_LOAD_SECONDS:g})",
    )
    for subparser in sub.choices.values():
        subparser.set_defaults(usage_error=_usage_error_of(subparser))
    return parser


def _usage_error_of(parser: argparse.ArgumentParser) -> Callable[[str], int]:
    """``usage_error(message)``: print ``parser``'s usage and ``message`` as argparse does
    for a bad argument; returns the exit code (2)."""

    def usage_error(message: str) -> int:
        with contextlib.suppress(OSError, ValueError):
            parser.print_usage(sys.stderr)
            print(f"{parser.prog}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USAGE

    return usage_error


# --- commands --------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> AsyncClient:
    return AsyncClient(args.client_host, api_token=args.client_api_token)


def _to_json(value: Any) -> str:
    return json.dumps(msgspec.to_builtins(value), indent=2)


def _quant(info: ModelInfo) -> str:
    return info.quantization.name if info.quantization is not None else "-"


async def cmd_ls(args: argparse.Namespace, out: Output) -> int:
    async with _client(args) as client:
        models = await client.system.list_downloaded()
    if args.json:
        out.raw(_to_json(models))
        return EXIT_OK
    if not models:
        out.line("No models are downloaded.")
        return EXIT_OK
    rows = [
        [
            m.model_key,
            m.type,
            format_bytes(m.size_bytes),
            m.params_string or "-",
            _quant(m),
            str(m.max_context_length),
        ]
        for m in models
    ]
    out.table(["KEY", "TYPE", "SIZE", "PARAMS", "QUANT", "MAX CONTEXT"], rows)
    return EXIT_OK


def ttl_remaining(info: ModelInstanceInfo, now: float | None = None) -> float | None:
    """Seconds until the idle TTL unloads ``info``, or ``None`` without a TTL."""
    if info.ttl is None:
        return None
    if info.last_used_time is None:
        return info.ttl
    now_ms = (time.time() if now is None else now) * 1000.0
    return max(info.ttl - (now_ms - info.last_used_time) / 1000.0, 0.0)


async def _all_loaded(client: AsyncClient) -> list[ModelInstanceInfo]:
    llms, embeddings = await asyncio.gather(
        client.llm.list_loaded(), client.embedding.list_loaded()
    )
    return [h.info for h in llms] + [h.info for h in embeddings]


async def cmd_ps(args: argparse.Namespace, out: Output) -> int:
    async with _client(args) as client:
        loaded = await _all_loaded(client)
    now = time.time()
    if args.json:
        data = []
        for info in loaded:
            item = msgspec.to_builtins(info)
            item["ttlRemainingSeconds"] = ttl_remaining(info, now)
            data.append(item)
        out.raw(json.dumps(data, indent=2))
        return EXIT_OK
    if not loaded:
        out.line("No models are loaded.")
        return EXIT_OK
    rows = [
        [
            i.identifier,
            i.model_key,
            i.type,
            str(i.context_length),
            format_seconds(ttl_remaining(i, now)),
            format_bytes(i.size_bytes),
        ]
        for i in loaded
    ]
    out.table(["IDENTIFIER", "MODEL", "TYPE", "CONTEXT", "TTL LEFT", "SIZE"], rows)
    return EXIT_OK


def _load_config(args: argparse.Namespace, domain: str) -> Any:
    """The load config of the options (``Any``: it matches the namespace picked at runtime)."""
    if domain == "embedding":
        return EmbeddingLoadConfig(context_length=args.context_length, gpu_offload=args.gpu)
    return LlmLoadConfig(context_length=args.context_length, gpu_offload=args.gpu)


async def cmd_load(args: argparse.Namespace, out: Output) -> int:
    async with _client(args) as client:
        model = resolve_model_key(await client.system.list_downloaded(), args.key)
        # The resolved model key, so that the server loads the model chosen here (and the
        # namespace matches its type); an unknown key as given, for the server's message.
        key = model.model_key if model is not None else args.key
        domain = model.type if model is not None else "llm"
        namespace = client.embedding if domain == "embedding" else client.llm
        if args.context_length == "max" and model is not None:
            args.context_length = model.max_context_length  # known: no second lookup
        config = _load_config(args, domain)
        if args.estimate_only:
            estimate = await namespace.estimate(key, config=config)
            if args.identifier is not None or args.ttl is not None:
                out.line("note: --identifier and --ttl are ignored with --estimate-only")
            memory = estimate.memory
            out.line(f"Estimate for {key}:")
            total = format_bytes(memory.total_bytes)
            out.line(f"  total:   {total} ({memory.confidence} confidence)")
            out.line(f"  model:   {format_bytes(memory.model_bytes)}")
            out.line(f"  context: {format_bytes(memory.context_bytes)}")
            out.line(f"  VRAM:    {format_bytes(memory.total_vram_bytes)}")
            out.line(f"  fits:    {'yes' if estimate.fits else 'no (fails the guardrails)'}")
            return EXIT_OK
        label = f"Loading {key}" + (f" as {args.identifier}" if args.identifier else "")
        started = time.perf_counter()
        try:
            with out.progress(label) as on_progress:
                task: asyncio.Future[LLM | EmbeddingModel] = asyncio.ensure_future(
                    namespace.load(
                        key,
                        args.identifier,
                        ttl=args.ttl,
                        config=config,
                        on_progress=on_progress,
                    )
                )
                outcome = await _await_interruptible(task)
                if outcome is not _Outcome.DONE:
                    raise _Interrupted
        except _Interrupted:
            return await _report_cancel(
                outcome,
                namespace.list_loaded,
                "load",
                "the model may still be loading on the server",
                "ps",
            )
        handle = task.result()
        info = handle.info
        ttl = f", TTL {format_seconds(info.ttl)}" if info.ttl is not None else ""
        out.line(
            f"Loaded {handle.identifier} ({handle.model_key}, context {info.context_length}{ttl})"
            f" in {time.perf_counter() - started:.1f}s"
        )
    return EXIT_OK


class _Outcome(enum.Enum):
    DONE = "done"  # finished (if it failed, the failure was raised)
    CANCELLED = "cancelled"  # Ctrl-C cancelled it, and it has finished cancelling
    ABANDONED = "abandoned"  # a second Ctrl-C: stopped waiting for it
    TIMED_OUT = "timed out"  # not finished within the timeout (then cancelled)


async def _await_interruptible(
    task: asyncio.Future[Any], *, patient: bool = True, timeout: float | None = None
) -> _Outcome:
    """Await ``task``, with Ctrl-C (SIGINT) handled: the first one cancels ``task`` (the SDK
    then sends the cancel and waits a moment for LM Studio to confirm it), a second one
    stops waiting for it. With ``patient=False`` the first Ctrl-C already stops waiting.
    A task that fails re-raises its failure; a task still running when this returns is
    cancelled and left to finish in the background."""
    loop = asyncio.get_running_loop()
    presses = 0
    give_up: asyncio.Future[None] = loop.create_future()

    def on_sigint() -> None:
        nonlocal presses
        presses += 1
        if presses == 1 and patient:
            task.cancel()
        elif not give_up.done():
            give_up.set_result(None)

    installed = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        installed = True
    try:
        await asyncio.wait([task, give_up], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
        give_up.cancel()
    if not task.done():
        task.cancel()
        return _Outcome.ABANDONED if presses else _Outcome.TIMED_OUT
    if task.cancelled():
        return _Outcome.CANCELLED
    task.result()  # re-raise a failure; a result that came first counts as done
    return _Outcome.DONE


async def _report_cancel(
    outcome: _Outcome,
    round_trip: Callable[[], Awaitable[object]],
    what: str,
    maybe: str,
    check: str,
) -> int:
    """After Ctrl-C stopped a ``what`` ("load", "download"): say whether LM Studio has seen
    the cancel, by one ``round_trip`` on the connection that carried it (LM Studio answers
    a connection's messages in order), for at most :data:`CANCEL_CONFIRM_SECONDS`, and
    stopping at a further Ctrl-C. Never claims a cancel it could not confirm (``maybe``:
    what may then still be going on; ``check``: the command that shows it)."""
    reason = f"LM Studio did not answer within {CANCEL_CONFIRM_SECONDS:g} s"
    if outcome is _Outcome.CANCELLED:
        confirm = asyncio.ensure_future(round_trip())
        try:
            outcome = await _await_interruptible(
                confirm, patient=False, timeout=CANCEL_CONFIRM_SECONDS
            )
        except (LMStudioError, OSError) as exc:
            outcome, reason = _Outcome.TIMED_OUT, cli_wording(str(exc))
        if outcome is _Outcome.DONE:
            error(f"interrupted: the {what} was cancelled on the server")
            return EXIT_INTERRUPTED
    see = f"check with `lmstudio-async {check}`"
    if outcome is _Outcome.ABANDONED:
        error(f"interrupted twice: did not wait for the cancel to be confirmed; {maybe} ({see})")
    else:
        error(f"interrupted, but could not confirm the cancel ({reason}); {maybe} ({see})")
    return EXIT_INTERRUPTED


async def cmd_get(args: argparse.Namespace, out: Output) -> int:
    """Search for ``KEY``, pick the exact match (else the first result) and its recommended
    option (else the first, or the one with ``--quant``), and download it with a progress bar."""
    async with _client(args) as client:
        results = await client.repository.search_models(args.key, limit=10)
        if not results:
            error(f"no downloadable model matches {args.key!r}")
            return EXIT_ERROR
        found = next((r for r in results if r.exact), results[0])
        options = await found.get_download_options()
        if args.quant is not None:
            wanted = args.quant.lower()
            options = [o for o in options if (o.quantization or "").lower() == wanted]
        if not options:
            quant = f" with quantization {args.quant!r}" if args.quant else ""
            error(f"{found.name} has no download option{quant}")
            return EXIT_ERROR
        option = next((o for o in options if o.recommended), options[0])
        label = f"Downloading {found.name} ({option.name}, {format_bytes(option.size_bytes)})"
        started = time.perf_counter()
        try:
            with out.progress(label) as on_fraction:
                task: asyncio.Future[str] = asyncio.ensure_future(
                    option.download(on_progress=lambda p: on_fraction(p.fraction))
                )
                outcome = await _await_interruptible(task)
                if outcome is not _Outcome.DONE:
                    raise _Interrupted
        except _Interrupted:
            return await _report_cancel(
                outcome,
                lambda: client.repository.search_models(args.key, limit=1),
                "download",
                "the download may still be running on the server",
                "ls",
            )
        out.line(
            f"Downloaded {task.result()} in {time.perf_counter() - started:.1f}s "
            f"(load it with: lmstudio-async load {task.result()})"
        )
    return EXIT_OK


async def cmd_unload(args: argparse.Namespace, out: Output) -> int:
    async with _client(args) as client:
        loaded = await _all_loaded(client)
        names = ", ".join(i.identifier for i in loaded)
        if args.all:
            targets = loaded
        elif args.identifier is not None:
            low = args.identifier.lower()
            targets = [i for i in loaded if i.identifier.lower() == low]
            if not targets:
                loaded_text = f"loaded: {names}" if loaded else "no models are loaded"
                raise ModelNotFoundError.client_side(
                    f"No loaded model has identifier {args.identifier!r} ({loaded_text})",
                    subject=args.identifier,
                )
        elif len(loaded) == 1:
            targets = loaded
        elif not loaded:
            out.line("No models are loaded.")
            return EXIT_OK
        else:
            error(f"{len(loaded)} models are loaded; name one or pass --all (loaded: {names})")
            return EXIT_ERROR
        if not targets:
            out.line("No models are loaded.")
            return EXIT_OK
        for info in targets:
            namespace = client.embedding if info.type == "embedding" else client.llm
            await namespace.unload(info.identifier)
            out.line(f"Unloaded {info.identifier}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the stand-in server until Ctrl-C (its own options: see ``serve --help``)."""
    from ..testing import serve, server_from_args

    try:
        server = server_from_args(args)
    except ValueError as exc:
        error(str(exc))
        return EXIT_USAGE
    try:
        asyncio.run(serve(server))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        error(f"cannot listen on {args.host}:{args.port}: {exc}")
        return EXIT_ERROR
    return EXIT_OK


async def _run_async(args: argparse.Namespace, out: Output) -> int:
    command = args.command
    if command == "ls":
        return await cmd_ls(args, out)
    if command == "ps":
        return await cmd_ps(args, out)
    if command == "load":
        return await cmd_load(args, out)
    if command == "unload":
        return await cmd_unload(args, out)
    if command == "get":
        return await cmd_get(args, out)
    if command == "demo":
        from .demo import run_demo

        return await run_demo(out, load_seconds=args.load_seconds)
    raise AssertionError(f"unknown command {command!r}")  # pragma: no cover


def _check_args(args: argparse.Namespace) -> str | None:
    """What argparse cannot check: combinations of options and the environment. Settles
    ``client_host`` (from ``$LMSTUDIO_API_HOST`` without ``--host``) and, for ``serve``,
    ``api_token``. Returns the usage error, if any."""
    command = args.command
    if command == "unload" and args.all and args.identifier is not None:
        return "give either an identifier or --all, not both"
    if command == "demo":
        given = [
            o
            for o, v in (("--host", args.client_host), ("--api-token", args.client_api_token))
            if v
        ]
        if given:
            verb = "does" if len(given) == 1 else "do"
            return f"{' and '.join(given)} {verb} not apply: the demo runs its own stand-in server"
        return None
    if command == "serve":
        if args.client_host is not None:
            return (
                "the global --host is the LM Studio to connect to and does not apply to "
                "serve: use `serve --host INTERFACE --port N`"
            )
        token = args.client_api_token
        if token is not None:
            if args.api_token is not None and args.api_token != token:
                return "two different API tokens: give --api-token once"
            args.api_token = token
        return None
    if args.client_host is None:
        # Empty is unset, as for the SDK; checked here to name the variable in the message.
        env = os.environ.get(ENV_API_HOST, "").strip()
        if env:
            try:
                args.client_host = _host(env)
            except argparse.ArgumentTypeError as exc:
                return f"${ENV_API_HOST}: {exc}"
    if args.client_api_token is None:
        try:
            credentials(None)  # $LMSTUDIO_API_TOKEN, checked as --api-token is
        except LMStudioValueError as exc:
            return f"${ENV_API_TOKEN}: {str(exc).removeprefix('api_token is ')}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _main(argv: list[str]) -> int:
    # The stand-in's options only when `serve` may be the command: importing the stand-in
    # takes a while, and Ctrl-C then shows no traceback only once this function runs.
    parser = build_parser(serve_options="serve" in argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, bad arguments
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    problem = _check_args(args)
    if problem is not None:
        usage_error: Callable[[str], int] = args.usage_error
        return usage_error(problem)
    try:
        if args.command == "serve":
            return cmd_serve(args)
        return asyncio.run(_run_async(args, Output()))
    except LMStudioError as exc:
        error(cli_wording(str(exc)))
        return EXIT_ERROR
