"""OpenAI-compatible endpoints (``/v1/...``); with ``native=True`` also REST v0's inference."""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import _engine as engine
from .._state import Instance
from . import convert as cv
from .common import (
    SSE,
    Fields,
    HttpError,
    HttpSink,
    json_response,
    model_unloaded,
    new_id,
    now_s,
    read_fields,
    ttl_ms,
    use_model,
)

if TYPE_CHECKING:
    from .._server import Runtime


# --- models -------------------------------------------------------------------------------------


def list_models(rt: Runtime) -> dict[str, Any]:
    """``/v1/models``: with JIT on every downloaded model plus other loaded identifiers;
    with JIT off only the loaded instances."""
    state = rt.state
    loaded = state.loaded()
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(name: str, model: dict[str, Any]) -> None:
        if name.lower() not in seen:
            seen.add(name.lower())
            entries.append({"id": name, "object": "model", "owned_by": model.get("publisher", "")})

    for inst in loaded:
        add(inst.identifier, inst.model)
    if state.jit_enabled:
        for model in state.catalog:
            add(str(model["modelKey"]), model)
    return {"object": "list", "data": entries}


# --- shared response parts ------------------------------------------------------------------------


def native_extras(inst: Instance, outcome: engine.Outcome) -> dict[str, Any]:
    """The fields REST v0 adds to OpenAI's completion objects."""
    stats = outcome.stats
    ttft = stats.get("timeToFirstTokenSec")
    total = float(stats.get("totalTimeSec", 0.0))
    quant = inst.model.get("quantization") or {}
    return {
        "stats": {
            "tokens_per_second": stats.get("tokensPerSecond", 0.0),
            "time_to_first_token": ttft if ttft is not None else 0.0,
            "generation_time": round(total - (ttft or 0.0), 6),
            "stop_reason": outcome.stop_reason,
            **cv.draft_stats(outcome),
        },
        "model_info": {
            "arch": inst.model.get("architecture", ""),
            "quant": quant.get("name", ""),
            "format": inst.model.get("format", ""),
            "context_length": inst.context_length,
        },
        "runtime": {
            "name": "lmstudio-async-stand-in",
            "version": "1.0.0",
            "supported_formats": ["gguf"],
        },
    }


def _stream_options(fields: Fields) -> bool:
    options = fields.obj("stream_options")
    return bool(options is not None and options.boolean("include_usage"))


# --- chat completions -----------------------------------------------------------------------------


async def chat_completions(
    rt: Runtime, request: web.Request, *, native: bool
) -> web.StreamResponse:
    fields = await read_fields(request)
    name = fields.string("model", required=True)
    assert name is not None
    history = {
        "messages": cv.history_from_messages(fields.raw("messages", required=True), images=True)
    }
    stream = bool(fields.boolean("stream"))
    include_usage = _stream_options(fields)
    received = cv.sampling_fields(fields, max_tokens=("max_tokens", "max_completion_tokens"))
    stop = cv.stop_field(fields)
    if stop is not None:
        received["llm.prediction.stopStrings"] = stop
    received.update(cv.response_format_fields(fields))
    fields.integer("n", minimum=1, maximum=1)  # the stand-in answers with one choice
    tools = cv.tool_fields(fields, received)
    if tools is not None:
        received["llm.prediction.tools"] = tools.setting
    ttl = ttl_ms(fields)
    draft = cv.draft_field(fields)
    cv.check_draft_early(rt.state, name, draft)
    loaded = await use_model(rt, request, name, "llm", ttl_ms=ttl)
    inst = loaded.inst
    draft_key = cv.draft_key(rt.state, inst.model, draft)
    config = cv.resolve_config(inst, received)
    lead = cv.image_lead(inst, history)
    prompt = engine.chat_prompt(inst, history, config)
    round_ = cv.tool_round(inst, config, history, tools)
    completion_id = new_id("chatcmpl-")
    created = now_s()

    def chunk(delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": inst.identifier,
            "system_fingerprint": inst.identifier,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
        }

    if not stream:
        sink = HttpSink(request)
        outcome = await engine.predict(
            rt.state, inst, config, prompt, sink, rt.tokens_per_second, round_, lead, draft_key
        )
        if outcome.stop_reason == "modelUnloaded":
            raise model_unloaded(inst)
        message, reason = cv.assistant_message(outcome, sink.tool_calls)
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": inst.identifier,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
            ],
            "usage": cv.usage(outcome),
            "system_fingerprint": inst.identifier,
        }
        if native:
            body.update(native_extras(inst, outcome))
        else:
            body["stats"] = cv.draft_stats(outcome)
        return json_response(body)

    # The stream starts with its first chunk, so that an error found before (e.g. a JSON
    # schema that cannot be followed) is still an ordinary 400 answer.
    sse = SSE(request)
    first = True
    calls = 0
    call_id = ""

    async def send_delta(delta: dict[str, Any]) -> None:
        nonlocal first
        if first:
            delta = {"role": "assistant", **delta}
            first = False
        await sse.send(chunk(delta, None))

    async def on_fragment(text: str) -> None:
        await send_delta({"content": text})

    async def on_tool_packet(packet: dict[str, Any]) -> None:
        nonlocal calls, call_id
        kind = packet["type"]
        if kind == "toolCallGenerationStart":
            call_id = packet.get("toolCallId") or f"call_{calls}"
        elif kind == "toolCallGenerationNameReceived":
            entry = {
                "index": calls,
                "id": call_id,
                "type": "function",
                "function": {"name": packet["name"], "arguments": ""},
            }
            await send_delta({"tool_calls": [entry]})
        elif kind == "toolCallGenerationArgumentFragmentGenerated":
            function = {"arguments": packet["content"]}
            await send_delta({"tool_calls": [{"index": calls, "function": function}]})
        elif kind == "toolCallGenerationEnd":
            calls += 1

    sink = HttpSink(request, on_fragment, sse=sse, on_tool_packet=on_tool_packet)
    outcome = await engine.predict(
        rt.state, inst, config, prompt, sink, rt.tokens_per_second, round_, lead, draft_key
    )
    if outcome.stop_reason == "modelUnloaded":
        return await _stream_error(sse, inst)
    _message, reason = cv.assistant_message(outcome, sink.tool_calls)
    if first:
        await send_delta({"content": ""})
    final = chunk({}, reason)
    if native:
        final.update(native_extras(inst, outcome))
    await sse.send(final)
    if include_usage:
        tail = chunk({}, None)
        tail["choices"] = []
        tail["usage"] = cv.usage(outcome)
        await sse.send(tail)
    await sse.done()
    return await sse.finish()


async def _stream_error(sse: SSE, inst: Instance) -> web.StreamResponse:
    """End an OpenAI-style stream whose model was unloaded mid-way: an error chunk (what the
    ``openai`` client raises ``APIError`` for) and no finish_reason, usage or ``[DONE]``."""
    await sse.send(model_unloaded(inst).body(False))
    return await sse.finish()


# --- text completions -----------------------------------------------------------------------------


def _prompt_text(fields: Fields) -> str:
    prompt = fields.raw("prompt", required=True)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise fields.bad("prompt", "a string (or an array of one string)", prompt)
    return prompt


async def completions(rt: Runtime, request: web.Request, *, native: bool) -> web.StreamResponse:
    fields = await read_fields(request)
    name = fields.string("model", required=True)
    assert name is not None
    text = _prompt_text(fields)
    stream = bool(fields.boolean("stream"))
    include_usage = _stream_options(fields)
    received = cv.sampling_fields(fields, max_tokens=("max_tokens",))
    stop = cv.stop_field(fields)
    if stop is not None:
        received["llm.prediction.stopStrings"] = stop
    ttl = ttl_ms(fields)
    draft = cv.draft_field(fields)
    cv.check_draft_early(rt.state, name, draft)
    loaded = await use_model(rt, request, name, "llm", ttl_ms=ttl)
    inst = loaded.inst
    draft_key = cv.draft_key(rt.state, inst.model, draft)
    config = cv.resolve_config(inst, received)
    prompt = engine.raw_prompt(text)
    completion_id = new_id("cmpl-")
    created = now_s()

    def body(piece: str, reason: str | None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": inst.identifier,
            "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": reason}],
        }

    if not stream:
        outcome = await engine.predict(
            rt.state,
            inst,
            config,
            prompt,
            HttpSink(request),
            rt.tokens_per_second,
            draft_key=draft_key,
        )
        if outcome.stop_reason == "modelUnloaded":
            raise model_unloaded(inst)
        result = body(outcome.text, cv.finish_reason(outcome.stop_reason))
        result["usage"] = cv.usage(outcome)
        if native:
            result.update(native_extras(inst, outcome))
        return json_response(result)

    sse = SSE(request)
    await sse.start()

    async def on_fragment(piece: str) -> None:
        await sse.send(body(piece, None))

    outcome = await engine.predict(
        rt.state,
        inst,
        config,
        prompt,
        HttpSink(request, on_fragment, sse=sse),
        rt.tokens_per_second,
        draft_key=draft_key,
    )
    if outcome.stop_reason == "modelUnloaded":
        return await _stream_error(sse, inst)
    final = body("", cv.finish_reason(outcome.stop_reason))
    if native:
        final.update(native_extras(inst, outcome))
    await sse.send(final)
    if include_usage:  # as OpenAI: one more chunk, with no choices, carries the usage
        tail = body("", None)
        tail["choices"] = []
        tail["usage"] = cv.usage(outcome)
        await sse.send(tail)
    await sse.done()
    return await sse.finish()


# --- embeddings -----------------------------------------------------------------------------------


async def embeddings(rt: Runtime, request: web.Request) -> web.Response:
    fields = await read_fields(request)
    name = fields.string("model", required=True)
    assert name is not None
    raw = fields.raw("input", required=True)
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise HttpError(
            400,
            "'input' must be a string or a non-empty array of strings",
            param="input",
            code="invalid_type",
        )
    encoding = fields.string("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise HttpError(
            400,
            "'encoding_format' must be 'float' or 'base64'",
            param="encoding_format",
            code="invalid_value",
        )
    fields.integer("dimensions", minimum=1)  # accepted; vectors keep the model's dimension
    loaded = await use_model(rt, request, name, "embedding", ttl_ms=ttl_ms(fields))
    inst = loaded.inst
    data: list[dict[str, Any]] = []
    tokens = 0
    for index, text in enumerate(texts):
        if index:
            await asyncio.sleep(0)  # a long list of inputs lets other requests in between
        vector = engine.embed(inst, text)
        tokens += engine.embedded_tokens(inst, text)
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "embedding": value, "index": index})
    if not rt.state.is_loaded(inst):
        raise model_unloaded(inst)
    rt.state.touch(inst)
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": inst.identifier,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


# --- responses (basic text) -----------------------------------------------------------------------


def _responses_input(fields: Fields) -> list[dict[str, Any]]:
    raw = fields.raw("input", required=True)
    if isinstance(raw, str):
        return [{"role": "user", "content": [cv.text_part(raw)]}]
    if not isinstance(raw, list) or not raw:
        raise fields.bad("input", "a string or a non-empty array of messages", raw)
    items = []
    for n, item in enumerate(raw):
        here = f"input[{n}]"
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            kind = item.get("type") if isinstance(item, dict) else None
            raise HttpError(
                400,
                f"'{here}' must be a message; input items of type {kind!r} are not supported "
                "by the stand-in",
                param=here,
                code="invalid_value",
            )
        items.append({"role": item.get("role"), "content": item.get("content")})
    return cv.history_from_messages(items, "input", images=True)


def _response_object(
    response_id: str,
    created: int,
    inst: Instance,
    status: str,
    text: str | None,
    message_id: str,
    outcome: engine.Outcome | None,
    fields: Fields,
) -> dict[str, Any]:
    incomplete = outcome is not None and outcome.stop_reason in (
        "maxPredictedTokensReached",
        "contextLengthReached",
    )
    output: list[dict[str, Any]] = []
    if text is not None:
        output.append(
            {
                "type": "message",
                "id": message_id,
                "status": "incomplete" if incomplete else "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "model": inst.identifier,
        "output": output,
        "error": None,
        "incomplete_details": None,
        "instructions": fields.raw("instructions"),
        "metadata": {},
        "parallel_tool_calls": False,
        "previous_response_id": fields.raw("previous_response_id"),
        "temperature": fields.raw("temperature"),
        "top_p": fields.raw("top_p"),
        "max_output_tokens": fields.raw("max_output_tokens"),
        "tool_choice": "auto",
        "tools": [],
    }
    if outcome is not None:
        body["usage"] = {
            "input_tokens": outcome.prompt_tokens,
            "output_tokens": outcome.predicted_tokens,
            "total_tokens": outcome.prompt_tokens + outcome.predicted_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        if incomplete:
            body["status"] = "incomplete"
            body["incomplete_details"] = {"reason": "max_output_tokens"}
    return body


async def responses(rt: Runtime, request: web.Request) -> web.StreamResponse:
    fields = await read_fields(request)
    name = fields.string("model", required=True)
    assert name is not None
    messages = _responses_input(fields)
    instructions = fields.string("instructions", empty=True)
    previous = fields.string("previous_response_id")
    store = fields.boolean("store")
    stream = bool(fields.boolean("stream"))
    received = cv.sampling_fields(fields, max_tokens=("max_output_tokens",))
    if fields.array("tools"):
        raise HttpError(
            400,
            "'tools' on /v1/responses is not supported by the stand-in (use /v1/chat/completions)",
            param="tools",
            code="not_implemented",
            kind="not_implemented",
        )
    prior: list[dict[str, Any]] = []
    if previous is not None:
        stored = rt.state.stored_chats.get(previous)
        if stored is None:
            raise HttpError(
                400,
                f"Previous response with id '{previous}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        prior = list(stored)
    history = prior + messages
    system = [{"role": "system", "content": [cv.text_part(instructions)]}] if instructions else []
    loaded = await use_model(rt, request, name, "llm", ttl_ms=ttl_ms(fields))
    inst = loaded.inst
    config = cv.resolve_config(inst, received)
    lead = cv.image_lead(inst, {"messages": history})
    prompt = engine.chat_prompt(inst, {"messages": system + history}, config)
    response_id = new_id("resp_")
    message_id = new_id("msg_")
    created = now_s()

    def remember(outcome: engine.Outcome) -> None:
        if store is not False:
            reply = {"role": "assistant", "content": [cv.text_part(outcome.text)]}
            cv.store_chat(rt.state.stored_chats, response_id, [*history, reply])

    if not stream:
        outcome = await engine.predict(
            rt.state, inst, config, prompt, HttpSink(request), rt.tokens_per_second, None, lead
        )
        if outcome.stop_reason == "modelUnloaded":
            raise model_unloaded(inst)
        remember(outcome)
        return json_response(
            _response_object(
                response_id, created, inst, "completed", outcome.text, message_id, outcome, fields
            )
        )

    sse = SSE(request)
    sequence = 0

    async def event(kind: str, **data: Any) -> None:
        nonlocal sequence
        await sse.send({"type": kind, "sequence_number": sequence, **data}, event=kind)
        sequence += 1

    start = _response_object(
        response_id, created, inst, "in_progress", None, message_id, None, fields
    )
    await event("response.created", response=start)
    await event("response.in_progress", response=start)
    item = {
        "type": "message",
        "id": message_id,
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    await event("response.output_item.added", output_index=0, item=item)
    part = {"type": "output_text", "text": "", "annotations": []}
    await event(
        "response.content_part.added",
        item_id=message_id,
        output_index=0,
        content_index=0,
        part=part,
    )

    async def on_fragment(piece: str) -> None:
        await event(
            "response.output_text.delta",
            item_id=message_id,
            output_index=0,
            content_index=0,
            delta=piece,
        )

    outcome = await engine.predict(
        rt.state,
        inst,
        config,
        prompt,
        HttpSink(request, on_fragment, sse=sse),
        rt.tokens_per_second,
        None,
        lead,
    )
    text = outcome.text
    if outcome.stop_reason == "modelUnloaded":  # OpenAI's end of a failed response
        failed = _response_object(
            response_id, created, inst, "failed", text, message_id, outcome, fields
        )
        failed["output"][0]["status"] = "incomplete"
        failed["error"] = {"code": "server_error", "message": model_unloaded(inst).message}
        await event("response.failed", response=failed)
        return await sse.finish()
    remember(outcome)
    await event(
        "response.output_text.done", item_id=message_id, output_index=0, content_index=0, text=text
    )
    done_part = {"type": "output_text", "text": text, "annotations": []}
    await event(
        "response.content_part.done",
        item_id=message_id,
        output_index=0,
        content_index=0,
        part=done_part,
    )
    final = _response_object(
        response_id, created, inst, "completed", text, message_id, outcome, fields
    )
    await event("response.output_item.done", output_index=0, item=final["output"][0])
    # OpenAI ends a response cut short by max_output_tokens with response.incomplete
    terminal = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    await event(terminal, response=final)
    return await sse.finish()
