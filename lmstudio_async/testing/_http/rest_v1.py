"""LM Studio's REST API v1 (``/api/v1/...``): models with their loaded instances, explicit
load and unload, and ``/api/v1/chat`` (stateful, streamed as named SSE events)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import _engine as engine
from .. import _errors as err
from .._kvconfig import context_key, effective_config
from .._state import Instance
from . import convert as cv
from .common import (
    SSE,
    Fields,
    HttpError,
    HttpSink,
    Loaded,
    from_standin,
    json_response,
    load_reserved,
    model_unloaded,
    new_id,
    read_fields,
    ttl_ms,
    use_model,
)

if TYPE_CHECKING:
    from .._server import Runtime

_LLM = "llm.load."
_LLAMA = "llm.load.llama."
# REST v1 load parameter -> LM Studio load-config key (LLMs; embeddings take context only).
_LLM_LOAD_KEYS = {
    "context_length": _LLM + "contextLength",
    "eval_batch_size": _LLAMA + "evalBatchSize",
    "flash_attention": _LLAMA + "flashAttention",
    "num_experts": _LLM + "numExperts",
    "offload_kv_cache_to_gpu": _LLM + "offloadKVCacheToGpu",
}


def _instance_config(inst: Instance) -> dict[str, Any]:
    config: dict[str, Any] = {"context_length": inst.context_length}
    if inst.domain == "llm":
        c = inst.config
        config["eval_batch_size"] = c.get(_LLAMA + "evalBatchSize")
        config["parallel"] = c.get(_LLM + "numParallelSessions")
        config["flash_attention"] = c.get(_LLAMA + "flashAttention")
        config["num_experts"] = c.get(_LLM + "numExperts")
        config["offload_kv_cache_to_gpu"] = c.get(_LLM + "offloadKVCacheToGpu")
    return config


def _load_config(inst: Instance) -> dict[str, Any]:
    config = _instance_config(inst)
    config.pop("parallel", None)
    if not config.get("num_experts"):
        config.pop("num_experts", None)  # only for mixture-of-experts models
    return config


def _model_entry(model: dict[str, Any], instances: list[Instance]) -> dict[str, Any]:
    quant = model.get("quantization")
    entry: dict[str, Any] = {
        "type": model["type"],
        "publisher": model.get("publisher", ""),
        "key": model["modelKey"],
        "display_name": model.get("displayName", model["modelKey"]),
    }
    if model["type"] == "llm":
        entry["architecture"] = model.get("architecture")
    entry["quantization"] = (
        {"name": quant.get("name"), "bits_per_weight": quant.get("bits")} if quant else None
    )
    entry["size_bytes"] = model["sizeBytes"]
    entry["params_string"] = model.get("paramsString")
    entry["loaded_instances"] = [
        {"id": inst.identifier, "config": _instance_config(inst)} for inst in instances
    ]
    entry["max_context_length"] = model["maxContextLength"]
    entry["format"] = model.get("format")
    if model["type"] == "llm":
        entry["capabilities"] = {
            "vision": bool(model.get("vision", False)),
            "trained_for_tool_use": bool(model.get("trainedForToolUse", False)),
        }
        entry["description"] = None
    return entry


async def list_models(rt: Runtime, _request: web.Request) -> web.Response:
    state = rt.state
    loaded = state.loaded()
    models = [
        _model_entry(m, [i for i in loaded if i.model is m or i.model_key == m["modelKey"]])
        for m in state.catalog
    ]
    return json_response({"models": models})


async def load(rt: Runtime, request: web.Request) -> web.Response:
    fields = await read_fields(request)
    name = fields.string("model", required=True)
    assert name is not None
    received: dict[str, Any] = {}
    context = fields.integer("context_length", minimum=1)
    values = {
        "eval_batch_size": fields.integer("eval_batch_size", minimum=1),
        "flash_attention": fields.boolean("flash_attention"),
        "num_experts": fields.integer("num_experts", minimum=0),
        "offload_kv_cache_to_gpu": fields.boolean("offload_kv_cache_to_gpu"),
    }
    echo = bool(fields.boolean("echo_load_config"))
    state = rt.state
    try:
        model, _ = state.resolve_downloaded(name, "llm")
    except err.StandInError as exc:
        if (exc.display_data or {}).get("code") != "generic.domainMismatch":
            raise from_standin(exc, name) from None
        model, _ = state.resolve_downloaded(name, "embedding")
    domain = str(model["type"])
    if context is not None:
        received[context_key(domain)] = context
    if domain == "llm":
        for param, value in values.items():
            if value is not None:
                received[_LLM_LOAD_KEYS[param]] = value
    try:
        config = effective_config(domain, model, received)
        memory = state.estimate(model, config)
        state.check_fits(model, memory, freed=[])
    except err.StandInError as exc:
        raise from_standin(exc, name) from None
    inst, seconds = await load_reserved(rt, state, model, config, memory, jit=False, ttl=None)
    body: dict[str, Any] = {
        "type": domain,
        "instance_id": inst.identifier,
        "load_time_seconds": round(seconds, 3),
        "status": "loaded",
    }
    if echo:
        body["load_config"] = _load_config(inst)
    return json_response(body)


async def unload(rt: Runtime, request: web.Request) -> web.Response:
    fields = await read_fields(request)
    identifier = fields.string("instance_id", required=True)
    assert identifier is not None
    state = rt.state
    for domain in ("llm", "embedding"):
        if any(i.identifier.lower() == identifier.lower() for i in state.loaded(domain)):
            inst = state.unload(identifier, domain)
            return json_response({"instance_id": inst.identifier})
    raise HttpError(
        404,
        f'No loaded model instance has the id "{identifier}"',
        param="instance_id",
        code="model_not_found",
        kind="model_not_found",
    )


# --- chat -----------------------------------------------------------------------------------------


def _chat_input(fields: Fields) -> list[dict[str, Any]]:
    """``input`` (text, or message/text/image items) as one user message's parts."""
    raw = fields.raw("input", required=True)
    if isinstance(raw, str):
        return [cv.text_part(raw)]
    if not isinstance(raw, list) or not raw:
        raise fields.bad("input", "a string or a non-empty array of input items", raw)
    parts: list[dict[str, Any]] = []
    for n, item in enumerate(raw):
        here = f"input[{n}]"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind in ("message", "text") and isinstance(item, dict):
            content = item.get("content")
            if not isinstance(content, str):
                raise HttpError(
                    400,
                    f"'{here}.content' must be a string",
                    param=f"{here}.content",
                    code="invalid_type",
                )
            parts.append(cv.text_part(content))
        elif kind == "image" and isinstance(item, dict):
            parts.append(cv.image_part(item.get("data_url"), f"{here}.data_url"))
        else:
            raise HttpError(
                400,
                f"'{here}.type' must be 'message' or 'image', got {kind!r}",
                param=f"{here}.type",
                code="invalid_value",
            )
    return parts


def _result(
    inst: Instance,
    outcome: engine.Outcome,
    loaded: Loaded,
    response_id: str | None,
) -> dict[str, Any]:
    stats = outcome.stats
    out_stats = _stats(
        outcome.prompt_tokens,
        outcome.predicted_tokens,
        stats.get("tokensPerSecond", 0.0),
        stats.get("timeToFirstTokenSec", 0.0),
    )
    if loaded.load_seconds is not None:
        out_stats["model_load_time_seconds"] = round(loaded.load_seconds, 3)
    result: dict[str, Any] = {
        "model_instance_id": inst.identifier,
        "output": [{"type": "message", "content": outcome.text}],
        "stats": out_stats,
    }
    if response_id is not None:
        result["response_id"] = response_id
    return result


def _empty_result(model_instance_id: str) -> dict[str, Any]:
    """The ``chat.end`` result of a stream that failed before generating anything (LM
    Studio ends a stream with ``chat.end`` "with whatever was generated", also after an
    ``error`` event)."""
    return {"model_instance_id": model_instance_id, "output": [], "stats": _stats()}


def _stats(
    input_tokens: int = 0,
    output_tokens: int = 0,
    tokens_per_second: float = 0.0,
    time_to_first_token: float = 0.0,
) -> dict[str, Any]:
    """The ``stats`` object of a chat result."""
    return {
        "input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "reasoning_output_tokens": 0,
        "tokens_per_second": tokens_per_second,
        "time_to_first_token_seconds": time_to_first_token,
    }


async def chat(rt: Runtime, request: web.Request) -> web.StreamResponse:
    fields = await read_fields(request)
    name = fields.string("model", required=True)
    assert name is not None
    parts = _chat_input(fields)
    system = fields.string("system_prompt", empty=True)
    stream = bool(fields.boolean("stream"))
    store = fields.boolean("store") is not False
    previous = fields.string("previous_response_id")
    context = fields.integer("context_length", minimum=1)
    received = cv.sampling_fields(fields, max_tokens=("max_output_tokens",))
    reasoning = fields.string("reasoning")
    if reasoning is not None and reasoning not in ("off", "low", "medium", "high", "on"):
        raise HttpError(
            400,
            "'reasoning' must be one of 'off', 'low', 'medium', 'high', 'on'",
            param="reasoning",
            code="invalid_value",
        )
    if reasoning not in (None, "off"):
        raise HttpError(
            400,
            f"The model does not support the reasoning setting '{reasoning}'",
            param="reasoning",
            code="unsupported_reasoning",
        )
    if fields.array("integrations"):
        raise HttpError(
            400,
            "'integrations' (plugins and MCP servers) are not supported by the stand-in",
            param="integrations",
            code="not_implemented",
            kind="not_implemented",
        )
    prior: list[dict[str, Any]] = []
    if previous is not None:
        if not previous.startswith("resp_") or previous not in rt.state.stored_chats:
            raise HttpError(
                400,
                f"No stored response has the id '{previous}'",
                param="previous_response_id",
                code="invalid_value",
            )
        prior = list(rt.state.stored_chats[previous])
    history = [*prior, {"role": "user", "content": parts}]
    head = [{"role": "system", "content": [cv.text_part(system)]}] if system else []
    load_fields = {"llm.load.contextLength": context} if context is not None else None
    ttl = ttl_ms(fields)
    response_id = new_id("resp_") if store else None

    def conclude(inst: Instance, outcome: engine.Outcome, loaded: Loaded) -> dict[str, Any]:
        """Store the exchange (unless ``store`` is false) and build the result."""
        if response_id is not None:
            reply = {"role": "assistant", "content": [cv.text_part(outcome.text)]}
            cv.store_chat(rt.state.stored_chats, response_id, [*history, reply])
        return _result(inst, outcome, loaded, response_id)

    if not stream:
        loaded = await use_model(rt, request, name, "llm", ttl_ms=ttl, load_fields=load_fields)
        inst = loaded.inst
        config = cv.resolve_config(inst, received)
        lead = cv.image_lead(inst, {"messages": history})
        prompt = engine.chat_prompt(inst, {"messages": head + history}, config)
        outcome = await engine.predict(
            rt.state, inst, config, prompt, HttpSink(request), rt.tokens_per_second, None, lead
        )
        if outcome.stop_reason == "modelUnloaded":
            raise model_unloaded(inst)
        return json_response(conclude(inst, outcome, loaded))

    sse = SSE(request)
    started: str | None = None  # the instance named by chat.start, once sent

    async def event(kind: str, **data: Any) -> None:
        await sse.send({"type": kind, **data}, event=kind)

    async def chat_start(inst: Instance) -> None:
        nonlocal started
        if started is None:
            started = inst.identifier
            await event("chat.start", model_instance_id=inst.identifier)

    async def fail(exc: HttpError, model_instance_id: str) -> web.StreamResponse:
        await event("error", error=exc.body(True)["error"])
        await event("chat.end", result=_empty_result(model_instance_id))
        return await sse.finish()

    async def load_start(inst: Instance) -> None:
        await chat_start(inst)
        await event("model_load.start", model_instance_id=inst.identifier)

    async def load_progress(inst: Instance, progress: float) -> None:
        await event("model_load.progress", model_instance_id=inst.identifier, progress=progress)

    try:
        loaded = await use_model(
            rt,
            request,
            name,
            "llm",
            ttl_ms=ttl,
            load_fields=load_fields,
            on_start=load_start,
            on_progress=load_progress,
        )
    except HttpError as exc:
        if started is None:
            raise
        return await fail(exc, started)
    inst = loaded.inst
    await chat_start(inst)
    try:
        messages = head + history
        return await _stream_chat(rt, request, sse, event, loaded, received, messages, conclude)
    except HttpError as exc:  # after the stream started, errors are events
        return await fail(exc, inst.identifier)


Event = Callable[..., Awaitable[None]]


async def _stream_chat(
    rt: Runtime,
    request: web.Request,
    sse: SSE,
    event: Event,
    loaded: Loaded,
    received: dict[str, Any],
    messages: list[dict[str, Any]],
    conclude: Callable[[Instance, engine.Outcome, Loaded], dict[str, Any]],
) -> web.StreamResponse:
    """The part of a streamed ``/api/v1/chat`` after ``chat.start``."""
    inst = loaded.inst
    if loaded.load_seconds is not None:
        await event(
            "model_load.end",
            model_instance_id=inst.identifier,
            load_time_seconds=round(loaded.load_seconds, 3),
        )
    config = cv.resolve_config(inst, received)
    lead = cv.image_lead(inst, {"messages": messages})
    prompt = engine.chat_prompt(inst, {"messages": messages}, config)
    await event("prompt_processing.start")
    in_message = False

    async def on_progress(progress: float) -> None:
        await event("prompt_processing.progress", progress=progress)

    async def on_fragment(piece: str) -> None:
        nonlocal in_message
        if not in_message:
            in_message = True
            await event("prompt_processing.end")
            await event("message.start")
        await event("message.delta", content=piece)

    outcome = await engine.predict(
        rt.state,
        inst,
        config,
        prompt,
        HttpSink(request, on_fragment, on_progress, sse=sse),
        rt.tokens_per_second,
        None,
        lead,
    )
    if outcome.stop_reason == "modelUnloaded":
        # an error event, then chat.end "with whatever was generated" (not stored)
        if in_message:
            await event("message.end")
        await event("error", error=model_unloaded(inst).body(True)["error"])
        await event("chat.end", result=_result(inst, outcome, loaded, None))
        return await sse.finish()
    if not in_message:
        await event("prompt_processing.end")
        await event("message.start")
    await event("message.end")
    await event("chat.end", result=conclude(inst, outcome, loaded))
    return await sse.finish()
