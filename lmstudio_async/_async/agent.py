"""``llm.act``: the multi-round tool-using loop of the official SDKs.

Each round is one ``predict`` with the tools offered (``llm.prediction.tools``); when the
model asks for tool calls (stop reason ``"toolCalls"``) they run (concurrently up to
``max_parallel_tool_calls``: coroutine functions on the loop, plain functions in worker
threads), their results join the chat, and the next round starts. The loop ends with a
round without tool calls, or after ``max_prediction_rounds`` (whose last round offers no
tools, so the model has to answer).

What the model is told when a call goes wrong follows the official Python SDK: an unknown
tool is ``"Cannot find tool with name NAME."``, bad arguments ``"Failed to parse arguments
for tool NAME: DETAIL"``, and a tool that raises ``"Unhandled Python exception: EXC!r"``
(JSON-encoded, as a tool's return value is). ``handle_invalid_tool_request`` may replace
those texts, or raise to stop ``act``.

Cancelling ``act`` (task cancel, a deadline, Ctrl-C in sync code) cancels the prediction in
flight on the server and the running tools: coroutine tools are cancelled; a plain
function already running in its worker thread cannot be interrupted, it finishes there and
its result is dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import msgspec

from .._protocol.chat import ChatInput, ChatMessage, coerce_chat
from .._protocol.prediction import (
    PredictionConfig,
    check_preset,
    check_tools_alone,
    coerce_prediction_config,
)
from .._protocol.results import Fragment, PredictionResult, PredictionRoundResult
from .._protocol.tools import (
    Tool,
    ToolCallRequest,
    ToolCallResult,
    ToolDefinition,
    ToolSet,
    encode_tool_result,
    parse_tools,
)
from ..errors import LMStudioValueError, ToolCallError
from .handle import USE_CLIENT_DEFAULT, TimeoutParam, log
from .inference import LlmMethods
from .threads import Escaped, reraise_escaped, run_in_thread

__all__ = ["ActResult", "AgentMethods", "InvalidToolRequestHandler"]

InvalidToolRequestHandler: TypeAlias = Callable[[ToolCallError, "ToolCallRequest | None"], Any]
"""``handle_invalid_tool_request(error, request)``: return a text to tell the model instead of
the default one, ``None`` to keep it, or raise to stop ``act``."""


@dataclasses.dataclass(frozen=True, slots=True)
class ActResult:
    """Summary of a finished :meth:`LLM.act` (the messages went to ``on_message``)."""

    rounds: int
    """How many prediction rounds ran."""
    total_time_seconds: float
    """Wall time of the whole ``act``, tools included."""


async def _call(callback: Callable[..., Any] | None, *args: Any) -> Any:
    if callback is None:
        return None
    result = callback(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _cancel_all(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _check_limit(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LMStudioValueError(f"{name} must be an integer >= 1 or None, got {value!r}")
    return value


class AgentMethods(LlmMethods):
    """:meth:`act`, on top of the inference methods of :class:`~lmstudio_async.LLM`."""

    async def act(
        self,
        chat: ChatInput,
        tools: Iterable[ToolDefinition],
        *,
        max_prediction_rounds: int | None = None,
        max_parallel_tool_calls: int | None = 1,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        preset: str | None = None,
        on_message: Callable[[ChatMessage], Any] | None = None,
        on_first_token: Callable[[int], Any] | None = None,
        on_prediction_fragment: Callable[[Fragment, int], Any] | None = None,
        on_round_start: Callable[[int], Any] | None = None,
        on_round_end: Callable[[int], Any] | None = None,
        on_prediction_completed: Callable[[PredictionRoundResult], Any] | None = None,
        on_prompt_processing_progress: Callable[[float, int], Any] | None = None,
        handle_invalid_tool_request: InvalidToolRequestHandler | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> ActResult:
        """Let the model use ``tools`` until it answers: rounds of prediction and tool calls.

        ``chat`` is what :meth:`respond` takes; it is copied, never modified: every new
        message (the assistant's replies with their tool calls, the tool results, the final
        answer) goes to ``on_message`` (e.g. ``on_message=chat.append``). ``tools`` are
        plain or coroutine functions (their type hints and docstrings become the JSON
        schema) or :class:`ToolFunctionDef`.

        ``max_prediction_rounds`` caps the rounds (the last one offers no tools);
        ``max_parallel_tool_calls`` how many calls of one round run at once (``None``: all).
        Callbacks (plain or coroutine functions) get the round index: ``on_round_start(i)``,
        ``on_first_token(i)``, ``on_prediction_fragment(fragment, i)``,
        ``on_prompt_processing_progress(fraction, i)``, ``on_prediction_completed(result)``
        (a :class:`PredictionRoundResult`), ``on_round_end(i)``. ``config``, ``preset`` and
        ``timeout`` apply to every prediction as in :meth:`respond`; tools have no deadline
        of their own. A failing tool is reported to the model (see the module notes);
        cancelling ``act`` cancels the prediction in flight and the running tools.
        """
        started = time.perf_counter()
        rounds_cap = _check_limit("max_prediction_rounds", max_prediction_rounds)
        parallel = _check_limit("max_parallel_tool_calls", max_parallel_tool_calls)
        for name, value in (
            ("on_message", on_message),
            ("on_first_token", on_first_token),
            ("on_prediction_fragment", on_prediction_fragment),
            ("on_round_start", on_round_start),
            ("on_round_end", on_round_end),
            ("on_prediction_completed", on_prediction_completed),
            ("on_prompt_processing_progress", on_prompt_processing_progress),
            ("handle_invalid_tool_request", handle_invalid_tool_request),
        ):
            if value is not None and not callable(value):
                raise LMStudioValueError(f"{name} must be a function, got {type(value).__name__}")
        working = coerce_chat(chat).copy()
        toolset = parse_tools(tools)
        config = coerce_prediction_config(config)  # checked once, before the first round
        check_tools_alone(
            toolset,
            config is not None and (config.json_schema is not None or config.grammar is not None),
        )
        if preset is not None:
            check_preset(preset)
        final_round = -1 if rounds_cap is None else rounds_cap - 1
        counter: Iterable[int] = itertools.count() if rounds_cap is None else range(rounds_cap)
        rounds = 0
        for round_index in counter:
            rounds = round_index + 1
            await _call(on_round_start, round_index)
            last = round_index == final_round
            result, failures = await self._act_round(
                working,
                None if last else toolset,
                round_index,
                config=config,
                preset=preset,
                on_first_token=on_first_token,
                on_prediction_fragment=on_prediction_fragment,
                on_prompt_processing_progress=on_prompt_processing_progress,
                timeout=timeout,
            )
            if on_prediction_completed is not None:
                fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
                await _call(
                    on_prediction_completed,
                    PredictionRoundResult(**fields, round_index=round_index),
                )
            if failures:
                await _invalid(
                    handle_invalid_tool_request,
                    "LM Studio could not parse the tool call the model wrote",
                    None,
                )
            requests = result.tool_calls
            if requests and last:
                await _invalid(
                    handle_invalid_tool_request,
                    "the model asked for a tool in the last prediction round "
                    f"(max_prediction_rounds={rounds_cap})",
                    None,
                )
            if requests:
                results = await reraise_escaped(
                    _run_tools(toolset, requests, parallel, handle_invalid_tool_request)
                )
                asked = ChatMessage(
                    role="assistant", content=result.content, tool_calls=tuple(requests)
                )
                answered = ChatMessage(role="tool", tool_results=tuple(results))
                working.append(asked).append(answered)
                await _call(on_message, asked)
                await _call(on_message, answered)
            else:
                final = ChatMessage(role="assistant", content=result.content)
                working.append(final)
                await _call(on_message, final)
            await _call(on_round_end, round_index)
            if not requests:
                break
        return ActResult(rounds=rounds, total_time_seconds=time.perf_counter() - started)

    async def _act_round(
        self,
        chat: Any,
        toolset: ToolSet | None,
        round_index: int,
        *,
        config: Any,
        preset: str | None,
        on_first_token: Callable[[int], Any] | None,
        on_prediction_fragment: Callable[[Fragment, int], Any] | None,
        on_prompt_processing_progress: Callable[[float, int], Any] | None,
        timeout: TimeoutParam,
    ) -> tuple[PredictionResult, int]:
        first = [on_first_token is not None]

        async def on_fragment(fragment: Fragment) -> None:
            if first[0]:
                first[0] = False
                await _call(on_first_token, round_index)
            await _call(on_prediction_fragment, fragment, round_index)

        async def on_progress(value: float) -> None:
            await _call(on_prompt_processing_progress, value, round_index)

        wants_fragments = on_first_token is not None or on_prediction_fragment is not None
        stream = self.respond_stream(
            chat,
            config=config,
            preset=preset,
            tools=toolset,  # type: ignore[arg-type]  # parse_tools passes a ToolSet through
            on_fragment=on_fragment if wants_fragments else None,
            on_prompt_progress=(on_progress if on_prompt_processing_progress else None),
            timeout=timeout,
        )
        result = await stream._run()
        return result, len(stream._tool_call_failures)


async def _invalid(
    handler: InvalidToolRequestHandler | None,
    message: str,
    request: ToolCallRequest | None,
    cause: BaseException | None = None,
) -> str:
    """The text to report for a tool call that went wrong (raises without a request)."""
    error = ToolCallError(message, request=request)
    error.__cause__ = cause
    if handler is not None:
        replacement = await _call(handler, error, request)
        if replacement is not None:
            message = str(replacement)
    if request is None:
        raise ToolCallError(message, request=None)
    return message


async def _run_tools(
    toolset: ToolSet,
    requests: Sequence[ToolCallRequest],
    parallel: int | None,
    handler: InvalidToolRequestHandler | None,
) -> list[ToolCallResult]:
    limit = asyncio.Semaphore(parallel if parallel is not None else len(requests))

    async def run(request: ToolCallRequest) -> ToolCallResult:
        async with limit:
            try:
                content = await _run_tool(toolset, request, handler)
            except (KeyboardInterrupt, SystemExit) as exc:
                # A coroutine tool's or the handler's: carried (see Escaped), since raised
                # bare from a task of its own it would stop the event loop.
                raise Escaped(exc) from None
            return ToolCallResult(content=content, tool_call_id=request.id)

    if len(requests) == 1:
        return [await run(requests[0])]
    tasks = [asyncio.ensure_future(run(r)) for r in requests]
    try:
        _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:  # act was cancelled: so are the tools
        await _cancel_all(tasks)
        raise
    if pending:  # one raised (a handler stopping act, Ctrl-C in a tool): stop the others
        await _cancel_all(tasks)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return [t.result() for t in tasks]


async def _run_tool(
    toolset: ToolSet, request: ToolCallRequest, handler: InvalidToolRequestHandler | None
) -> str:
    tool: Tool | None = toolset.tools.get(request.name)
    if tool is None:
        return await _invalid(handler, f"Cannot find tool with name {request.name}.", request)
    try:
        kwargs = tool.bind(request.arguments or {})
    except (msgspec.ValidationError, TypeError) as exc:
        return await _invalid(
            handler, f"Failed to parse arguments for tool {request.name}: {exc}", request, exc
        )
    try:
        if tool.is_async:
            value = await tool.implementation(**kwargs)
        else:
            value = await run_in_thread(tool.implementation, **kwargs)
            if inspect.isawaitable(value):  # e.g. a lambda returning a coroutine
                value = await value
        return encode_tool_result(value)
    except Escaped:  # a plain tool's SystemExit or KeyboardInterrupt: it stops act
        raise
    except Exception as exc:
        log.info("tool %r raised %r; reporting it to the model", request.name, exc)
        text = await _invalid(handler, f"Unhandled Python exception: {exc!r}", request, exc)
        return encode_tool_result(text)
