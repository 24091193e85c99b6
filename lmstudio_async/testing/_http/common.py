"""What every HTTP interface of the stand-in shares: errors, body checks, SSE, JIT loading.

The HTTP interfaces (OpenAI-compatible ``/v1``, REST ``/api/v0`` and ``/api/v1``) are thin
translations: they resolve a loaded instance here (loading it just in time when the request
names a model that is not loaded), then run the same :mod:`.._engine` the WebSocket API runs.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from .. import _errors as err
from .._kvconfig import MemoryEstimate, effective_config
from .._state import Instance, ModelState, PendingLoad, WaitAbandoned

if TYPE_CHECKING:
    from .._server import Runtime

__all__ = [
    "MAX_BODY_BYTES",
    "SSE",
    "Fields",
    "HttpError",
    "HttpSink",
    "Loaded",
    "json_response",
    "model_unloaded",
    "new_id",
    "read_fields",
    "use_model",
]

# Where errors use the REST v1 vocabulary instead of OpenAI's.
V1_PREFIX = "/api/v1/"

# The largest request body: as large as an incoming WebSocket frame (64 MiB), so that a
# request can carry what a WebSocket client can send, e.g. a few images at the upload limit
# (10 MiB each, about 13.4 MiB each as a base64 data URL). Larger bodies get a JSON 413.
MAX_BODY_BYTES = 64 * 1024 * 1024


class HttpError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status.

    ``kind`` is the REST v1 error type (``invalid_request``, ``model_not_found``, ...); the
    OpenAI-compatible and v0 endpoints answer with OpenAI's ``type`` names instead.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self, v1: bool) -> dict[str, Any]:
        if v1:
            error: dict[str, Any] = {"type": self.kind, "message": self.message}
            if self.code is not None:
                error["code"] = self.code
            if self.param is not None:
                error["param"] = self.param
            return {"error": error}
        openai_type = {
            "not_found": "not_found_error",
            "internal_error": "server_error",
        }.get(self.kind, "invalid_request_error")
        if self.status == 401:  # OpenAI's type for a missing or wrong key
            openai_type = "authentication_error"
        return {
            "error": {
                "message": self.message,
                "type": openai_type,
                "param": self.param,
                "code": self.code,
            }
        }


def from_standin(exc: err.StandInError, model: str | None = None) -> HttpError:
    """Translate a WebSocket-style error into the HTTP error LM Studio would answer with."""
    display = exc.display_data or {}
    code = display.get("code")
    message = exc.title if exc.cause is None else f"{exc.title}: {exc.cause}"
    if code in ("generic.pathNotFound", "generic.noModelMatchingQuery"):
        name = model if model is not None else display.get("path", "")
        return HttpError(
            404,
            f'Model "{name}" not found. Please specify a valid model.',
            param="model",
            code="model_not_found",
            kind="model_not_found",
        )
    if code == "generic.domainMismatch":
        return HttpError(400, message, param="model", code="model_type_mismatch")
    if code == "generic.visionNotSupported":
        return HttpError(400, message, param="model", code="vision_not_supported")
    if exc.error_data is not None and "requiredBytes" in exc.error_data:
        return HttpError(400, message, code="model_load_failed")
    return HttpError(400, message, code="invalid_value")


def model_unloaded(inst: Instance) -> HttpError:
    """The error of a request whose model was unloaded while it worked (another client, an
    explicit unload): its answer would be cut short, so it is no success."""
    return HttpError(
        503,
        f'The model "{inst.identifier}" was unloaded during the request, '
        "so the answer was cut short",
        code="model_unloaded",
        kind="internal_error",
    )


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


# The header the ``openai`` clients (Python and JS) obey over their own retry rules: with
# "false" they never retry the answer. Their default is to retry every status >= 500 (and
# 408, 409, 429, which the stand-in never sends) twice, but no such error of the stand-in
# is transient: a retry of a 503 ``model_unloaded`` would load the model just in time
# again and so silently undo the unload, and a JIT load interrupted by an unload the same.
NO_RETRY = {"x-should-retry": "false"}


def error_response(exc: HttpError, path: str) -> web.Response:
    response = json_response(exc.body(path.startswith(V1_PREFIX)), exc.status)
    if exc.status >= 500:
        response.headers.update(NO_RETRY)
    return response


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def now_s() -> int:
    return int(time.time())


# --- request bodies ---------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class Fields:
    """A JSON object body with typed getters that raise a 400 :class:`HttpError`."""

    def __init__(self, data: dict[str, Any], where: str = "") -> None:
        self.data = data
        self.where = where

    def _name(self, name: str) -> str:
        return f"{self.where}{name}"

    def bad(self, name: str, expected: str, value: Any) -> HttpError:
        return HttpError(
            400,
            f"'{self._name(name)}' must be {expected}, got {_type_name(value)}",
            param=self._name(name),
            code="invalid_type",
        )

    def missing(self, name: str) -> HttpError:
        return HttpError(
            400,
            f"'{self._name(name)}' is required",
            param=self._name(name),
            code="missing_required_parameter",
        )

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def raw(self, name: str, *, required: bool = False) -> Any:
        value = self.data.get(name)
        if value is None and required:
            raise self.missing(name)
        return value

    def string(self, name: str, *, required: bool = False, empty: bool = False) -> str | None:
        value = self.raw(name, required=required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.bad(name, "a string", value)
        if not value and not empty:
            raise HttpError(
                400,
                f"'{self._name(name)}' must not be empty",
                param=self._name(name),
                code="invalid_value",
            )
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.bad(name, "a boolean", value)
        return value

    def number(
        self, name: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> float | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(name, "a number", value)
        self._range(name, value, minimum, maximum)
        return float(value)

    def integer(
        self, name: str, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.bad(name, "an integer", value)
        self._range(name, value, minimum, maximum)
        return value

    def _range(self, name: str, value: float, low: float | None, high: float | None) -> None:
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (
                f"between {low:g} and {high:g}"
                if low is not None and high is not None
                else f">= {low:g}"
                if low is not None
                else f"<= {high:g}"
            )
            raise HttpError(
                400,
                f"'{self._name(name)}' must be {bounds}, got {value:g}",
                param=self._name(name),
                code="invalid_value",
            )

    def obj(self, name: str) -> Fields | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.bad(name, "an object", value)
        return Fields(value, f"{self._name(name)}.")

    def array(self, name: str, *, required: bool = False) -> list[Any] | None:
        value = self.raw(name, required=required)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.bad(name, "an array", value)
        return value


async def read_fields(request: web.Request) -> Fields:
    """The request's JSON object body; 400 for a missing, malformed or non-object body."""
    raw = await request.read()
    if not raw.strip():
        raise HttpError(
            400, "The request body is empty; expected a JSON object", code="invalid_json"
        )
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise HttpError(
            400, f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    except RecursionError:
        raise HttpError(
            400, "The request body is not valid JSON: it is nested too deeply", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise HttpError(
            400,
            f"The request body must be a JSON object, got {_type_name(data)}",
            code="invalid_json",
        )
    return Fields(data)


# The largest TTL whose milliseconds are still an exact JavaScript number (LM Studio keeps
# TTLs as JS numbers); beyond it, e.g. 1e308 seconds, the milliseconds would overflow.
MAX_TTL_SECONDS = (2**53 - 1) // 1000


def ttl_ms(fields: Fields) -> int | None:
    """The request's ``ttl`` (seconds, for a just-in-time load) in milliseconds."""
    ttl = fields.number("ttl", minimum=1, maximum=MAX_TTL_SECONDS)
    return None if ttl is None else int(ttl * 1000)


# --- streaming ----------------------------------------------------------------------------------


class SSE:
    """A Server-Sent Events response; writes after the client went away are dropped."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        self.started = False
        self.closed = False

    async def start(self) -> None:
        if not self.started:
            self.started = True
            await self.response.prepare(self.request)

    async def send(self, data: Any, event: str | None = None) -> None:
        await self.start()
        payload = data if isinstance(data, bytes) else msgspec.json.encode(data)
        head = b"" if event is None else b"event: " + event.encode() + b"\n"
        await self._write(head + b"data: " + payload + b"\n\n")

    async def done(self) -> None:
        """The OpenAI stream terminator, ``data: [DONE]``."""
        await self.start()
        await self._write(b"data: [DONE]\n\n")

    async def _write(self, chunk: bytes) -> None:
        if self.closed:
            return
        try:
            await self.response.write(chunk)
        except (ConnectionError, RuntimeError):
            self.closed = True

    async def finish(self) -> web.StreamResponse:
        await self.start()
        if not self.closed:
            try:
                await self.response.write_eof()
            except (ConnectionError, RuntimeError):
                self.closed = True
        return self.response


class HttpSink:
    """The engine's :class:`~.._engine.Sink` for an HTTP request.

    Fragments, prompt progress and tool-call packets go to the given callbacks (finished
    tool calls are also collected in ``tool_calls``); the prediction stops (as if cancelled)
    once the client has disconnected or the SSE stream could not be written.
    """

    def __init__(
        self,
        request: web.Request,
        on_fragment: Callable[[str], Awaitable[None]] | None = None,
        on_progress: Callable[[float], Awaitable[None]] | None = None,
        sse: SSE | None = None,
        on_tool_packet: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.request = request
        self.on_fragment = on_fragment
        self.on_progress = on_progress
        self.on_tool_packet = on_tool_packet
        self.sse = sse
        self.tool_calls: list[dict[str, Any]] = []  # toolCallRequest objects, in order

    def gone(self) -> bool:
        transport = self.request.transport
        return (
            transport is None
            or transport.is_closing()
            or (self.sse is not None and self.sse.closed)
        )

    async def send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "fragment" and self.on_fragment is not None:
            await self.on_fragment(str(message["fragment"]["content"]))
        elif kind == "promptProcessingProgress" and self.on_progress is not None:
            await self.on_progress(float(message["progress"]))
        elif isinstance(kind, str) and kind.startswith("toolCallGeneration"):
            if kind == "toolCallGenerationEnd":
                self.tool_calls.append(dict(message["toolCallRequest"]))
            if self.on_tool_packet is not None:
                await self.on_tool_packet(message)

    async def wait_or_cancel(self, seconds: float) -> bool:
        await asyncio.sleep(max(0.0, seconds))
        return self.gone()


# --- models: lookup and just-in-time loading ----------------------------------------------------

# The instances each request in progress works on (see ``hold``), by ``id(request)``.
_HELD: dict[int, list[Instance]] = {}


def hold(state: ModelState, request: web.Request, inst: Instance) -> None:
    """Count the request as work on ``inst`` until it is answered (``release_held``): the
    instance is busy meanwhile, so its idle TTL does not run and auto-evict waits for it
    (during its grace)."""
    state.begin_work(inst)
    _HELD.setdefault(id(request), []).append(inst)


def release_held(state: ModelState, request: web.Request) -> None:
    """End the work of :func:`hold` for every instance the request held (once)."""
    for inst in _HELD.pop(id(request), []):
        state.end_work(inst)


@dataclass
class Loaded:
    """The instance a request runs on; ``load_seconds`` is set when it was loaded for it."""

    inst: Instance
    load_seconds: float | None = None


LoadStart = Callable[[Instance], Awaitable[None]]
LoadProgress = Callable[[Instance, float], Awaitable[None]]


def other_domain(domain: str) -> str:
    return "embedding" if domain == "llm" else "llm"


def _wrong_domain(name: str, domain: str) -> HttpError:
    actual = "an embedding model" if domain == "llm" else "an LLM"
    wanted = "an LLM" if domain == "llm" else "an embedding model"
    return HttpError(
        400,
        f'Model "{name}" is {actual}, but this endpoint needs {wanted}',
        param="model",
        code="model_type_mismatch",
    )


def _usable(inst: Instance | None) -> Instance | None:
    """``inst``, unless a just-in-time load is waiting to evict it (then a request queues
    for a load of its own rather than prolong the wait)."""
    return None if inst is None or inst.evicting else inst


def _client_gone(request: web.Request) -> Callable[[], bool]:
    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    return gone


async def use_model(
    rt: Runtime,
    request: web.Request,
    name: str,
    domain: str,
    *,
    ttl_ms: int | None = None,
    load_fields: dict[str, Any] | None = None,
    on_start: LoadStart | None = None,
    on_progress: LoadProgress | None = None,
) -> Loaded:
    """The loaded instance ``name`` refers to, loading it just in time when it is not loaded.
    The request holds the instance (:func:`hold`) until it is answered.

    A loaded instance matching ``name`` (identifier, model key or path prefix) is used and its
    idle timer reset. Otherwise, with JIT loading on, the downloaded model is loaded as a JIT
    instance (``ttl_ms``, else the server's default JIT TTL), evicting other JIT instances
    when auto-evict is on, once their work in progress has ended or the grace
    (``jit_evict_grace``) is over. Requests for a model whose just-in-time load is in
    progress (from HTTP or a WebSocket ``getOrLoad``) join that load (and load it themselves,
    in turn, if it is abandoned); other loads queue, one at a time.
    """
    state = rt.state
    query = {"identifier": name}
    found = _usable(state.find_by_query(query, domain))
    if found is not None:
        hold(state, request, found)
        return Loaded(found)
    if state.find_by_query(query, other_domain(domain)) is not None:
        raise _wrong_domain(name, domain)
    try:
        model, _ = state.resolve_downloaded(name, domain)
    except err.StandInError as exc:
        code = (exc.display_data or {}).get("code")
        if code == "generic.domainMismatch":
            raise _wrong_domain(name, domain) from None
        raise from_standin(exc, name) from None
    key = (domain, str(model["modelKey"]).lower())
    pending = state.pending_jit.get(key)
    if pending is not None:
        joined = await _join(state, request, pending)
        if joined is not None:
            return Loaded(joined)
        return await use_model(
            rt,
            request,
            name,
            domain,
            ttl_ms=ttl_ms,
            load_fields=load_fields,
            on_start=on_start,
            on_progress=on_progress,
        )
    if not state.jit_enabled:
        raise HttpError(
            404,
            f'Model "{name}" is not loaded, and just-in-time loading is off. Load it first.',
            param="model",
            code="model_not_loaded",
            kind="model_not_found",
        )
    pending = PendingLoad(asyncio.get_running_loop().create_future(), http=True)
    state.pending_jit[key] = pending
    seconds: float | None = None
    gone = _client_gone(request)
    try:
        async with state.jit_turn(gone):
            found = _usable(state.find_by_query(query, domain))  # loaded meanwhile
            if found is not None:
                inst = found
            else:
                inst, seconds = await _jit_load(
                    rt, state, model, ttl_ms, load_fields, on_start, on_progress, gone
                )
            hold(state, request, inst)
            state.grant_joiners(pending, inst)
    except WaitAbandoned:  # the client went away: joiners try again on their own
        pending.future.cancel()
        raise HttpError(400, "The client went away", code="client_gone") from None
    except Exception as exc:
        pending.future.set_exception(exc)
        pending.future.exception()  # marked as retrieved; waiters still see it
        raise
    except BaseException:
        pending.future.cancel()
        raise
    finally:
        if state.pending_jit.get(key) is pending:
            del state.pending_jit[key]
    return Loaded(inst, seconds)


async def _join(state: ModelState, request: web.Request, pending: PendingLoad) -> Instance | None:
    """Wait for ``pending`` and hold its instance; ``None`` when the request should look
    again (the load was abandoned, or its instance is gone already)."""
    future = pending.future
    pending.joiners += 1
    try:
        inst = await asyncio.shield(future)
    except asyncio.CancelledError:
        if future.done() and not future.cancelled() and future.exception() is None:
            state.end_work(future.result())  # the work granted to this request
        elif not future.done():
            pending.joiners -= 1
        task = asyncio.current_task()
        if not future.cancelled() or (task is not None and task.cancelling()):
            raise
        return None  # the request that was loading it went away: try again
    _HELD.setdefault(id(request), []).append(inst)  # granted by the loader (grant_joiners)
    if not state.is_loaded(inst):  # unloaded before this request ran
        return None
    return inst


async def _jit_load(
    rt: Runtime,
    state: ModelState,
    model: dict[str, Any],
    ttl: int | None,
    load_fields: dict[str, Any] | None,
    on_start: LoadStart | None,
    on_progress: LoadProgress | None,
    gone: Callable[[], bool],
) -> tuple[Instance, float]:
    domain = str(model["type"])
    try:
        config = effective_config(domain, model, dict(load_fields or {}))
        memory = state.estimate(model, config)
    except err.StandInError as exc:
        raise from_standin(exc) from None
    evict = await state.make_room_for_jit(gone)
    try:
        state.check_fits(model, memory, freed=evict)
    except err.StandInError as exc:
        raise from_standin(exc) from None
    finally:
        state.unmark_evicting(evict)
    for other in evict:
        state.discard(other)
    return await load_reserved(
        rt,
        state,
        model,
        config,
        memory,
        jit=True,
        ttl=ttl if ttl is not None else state.jit_ttl_ms,
        on_start=on_start,
        on_progress=on_progress,
    )


async def load_reserved(
    rt: Runtime,
    state: ModelState,
    model: dict[str, Any],
    config: dict[str, Any],
    memory: MemoryEstimate,
    *,
    jit: bool,
    ttl: int | None,
    on_start: LoadStart | None = None,
    on_progress: LoadProgress | None = None,
) -> tuple[Instance, float]:
    """Reserve an instance of ``model`` (already checked to fit), spend its load time and
    commit it; it is discarded if the load fails, is cancelled or the instance is unloaded
    meanwhile. Returns the instance and the seconds the load took."""
    inst = state.reserve(
        identifier=state.auto_identifier(str(model["modelKey"])),
        model=model,
        config=config,
        memory=memory,
        jit=jit,
        ttl_ms=ttl,
    )
    try:
        seconds = await load_delay(rt, inst, on_start, on_progress)
        if inst not in state.instances:
            raise HttpError(
                500,
                f'Loading "{inst.model_key}" was interrupted: the instance was unloaded',
                code="model_load_failed",
                kind="internal_error",
            )
        state.commit(inst)
    except BaseException:
        state.discard(inst)
        raise
    return inst, seconds


async def load_delay(
    rt: Runtime,
    inst: Instance,
    on_start: LoadStart | None,
    on_progress: LoadProgress | None,
) -> float:
    """Spend the simulated load time, reporting progress; returns the seconds it took."""
    started = time.monotonic()
    if on_start is not None:
        await on_start(inst)
    steps = max(1, rt.progress_steps)
    for step in range(1, steps + 1):
        await asyncio.sleep(rt.load_seconds / steps)
        if on_progress is not None:
            await on_progress(inst, step / steps)
    return time.monotonic() - started
