"""Endpoint handlers for the llm, embedding and system namespaces (and empty ones)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from . import _draft as drafting
from . import _engine as engine
from . import _errors as err
from . import _files as files
from . import _hub as hub
from . import _presets as presets
from . import _schema as s
from . import _textgen as tg
from ._connection import (
    VOID,
    ChannelContext,
    ChannelEndpoint,
    Connection,
    Namespace,
    RpcEndpoint,
)
from ._kvconfig import collapse_stack, config_fields, effective_config, prediction_config
from ._state import Instance, ModelState, PendingLoad, WaitAbandoned, wait_unless_gone
from ._toolcalls import messages_from_history

LMSTUDIO_VERSION = "0.3.31"
LMSTUDIO_BUILD = 1

_cancel_packet = s.obj({"type": s.literal("cancel")})
_never = s.literal()  # accepts nothing
_device = s.nullable(s.string)


def _state(conn: Connection) -> ModelState:
    return conn.rt.state


# --- loading ------------------------------------------------------------------------------


async def _progress(ctx: ChannelContext, inst: Instance, packet_type: str) -> None:
    rt = ctx.runtime
    steps = max(1, rt.progress_steps)
    delay = rt.load_seconds / steps
    key = inst.model_key
    for step in range(1, steps + 1):
        await ctx.pause(delay, lambda: err.load_cancelled(key))
        await ctx.send({"type": packet_type, "progress": step / steps})
    await ctx.pause(0, lambda: err.load_cancelled(key))


def _prepare(
    state: ModelState, domain: str, model: dict[str, Any], stack: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    config = effective_config(domain, model, collapse_stack(stack))
    return config, state.estimate(model, config)


def _load_model(domain: str) -> Any:
    async def handler(ctx: ChannelContext, param: dict[str, Any]) -> None:
        state = _state(ctx.conn)
        device = state.check_device(param.get("deviceIdentifier"))
        explicit = param.get("identifier")
        if explicit is not None and state.identifier_taken(explicit):
            raise err.identifier_exists(explicit)
        model, ambiguous = state.resolve_downloaded(param["modelKey"], domain)
        resolved: dict[str, Any] = {"type": "resolved", "info": model}
        if ambiguous:
            resolved["ambiguous"] = ambiguous
        await ctx.send(resolved)
        config, memory = _prepare(state, domain, model, param["loadConfigStack"])
        state.check_fits(model, memory, freed=[], device=device)
        if explicit is not None and state.identifier_taken(explicit):
            raise err.identifier_exists(explicit)
        identifier = explicit if explicit is not None else state.auto_identifier(model["modelKey"])
        ttl = param.get("ttlMs")
        inst = state.reserve(
            identifier=identifier,
            model=model,
            config=config,
            memory=memory,
            jit=False,
            ttl_ms=None if ttl is None else int(ttl),
            device=device,
        )
        try:
            await _progress(ctx, inst, "progress")
            state.commit(inst)
        except BaseException:
            state.discard(inst)
            raise
        await ctx.send({"type": "success", "info": inst.info()})

    return handler


def _get_or_load(domain: str) -> Any:
    async def handler(ctx: ChannelContext, param: dict[str, Any]) -> None:
        state = _state(ctx.conn)
        device = state.check_device(param.get("deviceIdentifier"))
        query: dict[str, Any] = {"identifier": param["identifier"]}
        if "deviceIdentifier" in param:
            query["deviceIdentifier"] = device
        while True:
            if await _already_loaded(ctx, state, query, domain):
                return
            model, _ambiguous = state.resolve_downloaded(param["identifier"], domain)
            config, memory = _prepare(state, domain, model, param["loadConfigStack"])
            key = (domain, str(model["modelKey"]).lower())
            pending = state.pending_jit.get(key)
            if pending is None or not pending.http or device is not None:
                break
            # an HTTP request is loading this model just in time: wait for it, then use it
            await _wait_pending(ctx, pending.future, model["modelKey"])
        # Every JIT load takes its turn, also a second getOrLoad of a model whose getOrLoad
        # is in progress: once its turn comes, that model is loaded and it answers
        # alreadyLoaded (LM Studio may load a duplicate instead, lmstudio-bug-tracker #1751;
        # the stand-in keeps at most one JIT model). Only the first registers its load, so
        # HTTP requests for the model join that one.
        mine: PendingLoad | None = None
        if pending is None:
            mine = PendingLoad(asyncio.get_running_loop().create_future(), http=False)
            state.pending_jit[key] = mine
        try:
            gone = ctx.cancelled.is_set
            async with state.jit_turn(gone):
                if await _already_loaded(ctx, state, query, domain, mine):
                    return
                evict = await state.make_room_for_jit(gone, device=device)
                try:
                    inst = await _jit_load_now(ctx, param, model, config, memory, evict, device)
                finally:
                    state.unmark_evicting(evict)
                if mine is not None:
                    state.grant_joiners(mine, inst)
        except WaitAbandoned:
            if mine is not None:
                mine.future.cancel()
            raise err.load_cancelled(model["modelKey"]) from None
        except Exception as exc:
            if mine is None or mine.future.done():
                pass
            elif ctx.cancelled.is_set():  # the client cancelled: joiners try again
                mine.future.cancel()
            else:
                mine.future.set_exception(exc)
                mine.future.exception()  # marked as retrieved; joiners still see it
            raise
        except BaseException:
            if mine is not None:
                mine.future.cancel()
            raise
        finally:
            if mine is not None and state.pending_jit.get(key) is mine:
                del state.pending_jit[key]

    return handler


async def _already_loaded(
    ctx: ChannelContext,
    state: ModelState,
    query: dict[str, Any],
    domain: str,
    mine: PendingLoad | None = None,
) -> bool:
    """Answer ``alreadyLoaded`` if ``query`` names a loaded instance that no JIT load is
    evicting (and hand it to the joiners of ``mine``); whether it did."""
    existing = state.find_by_query(query, domain)
    if existing is None or existing.evicting:
        return False
    state.touch(existing)
    await ctx.send({"type": "alreadyLoaded", "info": existing.info()})
    if mine is not None:  # (the turn is held: nothing evicts it meanwhile)
        state.grant_joiners(mine, existing)
    return True


async def _wait_pending(ctx: ChannelContext, future: asyncio.Future[Instance], key: str) -> None:
    """Wait for another interface's load to end (however it ends); raises
    ``load_cancelled`` if the client cancels meanwhile."""
    try:
        await wait_unless_gone(future, ctx.cancelled.is_set)
    except WaitAbandoned:
        raise err.load_cancelled(key) from None


async def _jit_load_now(
    ctx: ChannelContext,
    param: dict[str, Any],
    model: dict[str, Any],
    config: dict[str, Any],
    memory: Any,
    evict: list[Instance],
    device: str | None,
) -> Instance:
    """Evict ``evict``, then load ``model`` as a JIT instance, with getOrLoad's packets."""
    state = _state(ctx.conn)
    state.check_fits(model, memory, freed=evict, device=device)
    for other in evict:
        state.discard(other)
    identifier = state.auto_identifier(model["modelKey"])
    ttl = param.get("loadTtlMs")
    inst = state.reserve(
        identifier=identifier,
        model=model,
        config=config,
        memory=memory,
        jit=True,
        ttl_ms=None if ttl is None else int(ttl),
        device=device,
    )
    try:
        await ctx.send({"type": "startLoading", "identifier": identifier, "info": model})
        for other in evict:
            await ctx.send({"type": "unloadingOtherJITModel", "info": other.info()})
        await _progress(ctx, inst, "loadProgress")
        state.commit(inst)
    except BaseException:
        state.discard(inst)
        raise
    await ctx.send({"type": "loadSuccess", "info": inst.info()})
    return inst


# --- RPCs shared by llm and embedding -----------------------------------------------------


def _list_loaded(domain: str) -> Any:
    def handler(conn: Connection, _param: Any) -> Any:
        return [i.info() for i in _state(conn).loaded(domain)]

    return handler


def _get_model_info(domain: str) -> Any:
    def handler(conn: Connection, param: dict[str, Any]) -> Any:
        state = _state(conn)
        inst = state.find_by_specifier(param["specifier"], domain)
        if inst is not None:
            return inst.info()
        if not param["throwIfNotFound"]:
            return VOID
        return state.require(param["specifier"], domain).info()

    return handler


def _get_load_config(domain: str) -> Any:
    def handler(conn: Connection, param: dict[str, Any]) -> Any:
        return config_fields(_state(conn).require(param["specifier"], domain).config)

    return handler


def _unload(domain: str) -> Any:
    def handler(conn: Connection, param: dict[str, Any]) -> Any:
        state = _state(conn)
        if "deviceIdentifier" in param:
            device = state.check_device(param["deviceIdentifier"])
            state.unload(param["identifier"], domain, device)
        else:
            state.unload(param["identifier"], domain)
        return VOID

    return handler


def _estimate(domain: str) -> Any:
    def handler(conn: Connection, param: dict[str, Any]) -> Any:
        state = _state(conn)
        device = state.check_device(param.get("deviceIdentifier"))
        model, _ = state.resolve_downloaded(param["modelKey"], domain)
        _config, memory = _prepare(state, domain, model, param["loadConfigStack"])
        return {
            "memory": memory.to_wire(),
            "passesGuardrails": memory.total_bytes <= state.free_bytes(device=device),
        }

    return handler


def _processing_state(domain: str) -> Any:
    def handler(conn: Connection, param: dict[str, Any]) -> Any:
        state = _state(conn)
        # The result is a ModelProcessingState, not optional (baseModelBackendInterface.ts),
        # so an instance that is not there is an error whatever throwIfNotFound says.
        state.require(param["specifier"], domain)
        return {"status": "idle", "queued": 0}

    return handler


def _use(conn: Connection, specifier: dict[str, Any], domain: str) -> Instance:
    state = _state(conn)
    inst = state.require(specifier, domain)
    state.touch(inst)
    return inst


# Embedding models wrap their input in start/end markers (BERT's [CLS] and [SEP] ids), so
# their tokenize gives countTokens + 2 tokens, as LM Studio's do; LLM tokenize adds none.
EMBEDDING_MARKERS = tg.EMBEDDING_MARKERS


def _tokenize(domain: str) -> Any:
    def handler(conn: Connection, param: dict[str, Any]) -> Any:
        _use(conn, param["specifier"], domain)
        tokens = engine.tokenize(param["inputString"])
        if domain == "embedding":
            tokens = [EMBEDDING_MARKERS[0], *tokens, EMBEDDING_MARKERS[1]]
        return {"tokens": tokens}

    return handler


def _count_tokens(domain: str) -> Any:
    def handler(conn: Connection, param: dict[str, Any]) -> Any:
        _use(conn, param["specifier"], domain)
        return {"tokenCount": engine.count_tokens(param["inputString"])}

    return handler


def _apply_prompt_template(conn: Connection, param: dict[str, Any]) -> Any:
    inst = _use(conn, param["specifier"], "llm")
    config = prediction_config(
        collapse_stack(param["predictionConfigStack"]), tg.default_prompt_template(inst.model)
    )
    opts = param["opts"]
    rendered = tg.render_prompt(
        inst.model,
        param["history"],
        config["llm.prediction.promptTemplate"],
        omit_bos=bool(opts.get("omitBosToken", False)),
        omit_eos=bool(opts.get("omitEosToken", False)),
    )
    return {"formatted": rendered.text}


def _base_prediction_config(conn: Connection, param: dict[str, Any]) -> Any:
    inst = _state(conn).require(param["specifier"], "llm")
    return config_fields(prediction_config({}, tg.default_prompt_template(inst.model)))


def _embed_string(conn: Connection, param: dict[str, Any]) -> Any:
    inst = _use(conn, param["modelSpecifier"], "embedding")
    return {"embedding": engine.embed(inst, param["inputString"])}


# --- prediction -----------------------------------------------------------------------------


async def _run_prediction(
    ctx: ChannelContext, param: dict[str, Any], raw_prompt: str | None
) -> None:
    state = _state(ctx.conn)
    inst = state.require(param["modelSpecifier"], "llm")
    received = collapse_stack(param["predictionConfigStack"])
    fuzzy = param.get("fuzzyPresetIdentifier")
    if fuzzy is not None:  # the client's settings override the preset's
        preset = presets.resolve_preset(ctx.runtime.presets, fuzzy)
        received = {**presets.preset_fields(preset), **received}
    state.touch(inst)
    config = engine.resolve_config(inst, received)
    tools = None
    lead = ""
    if raw_prompt is not None:
        prompt = engine.raw_prompt(raw_prompt)
    else:
        images = state.files.images_in(ctx.conn.client_identifier or "", param["history"])
        if images and not inst.model.get("vision"):
            raise files.vision_not_supported(inst.model_key)
        lead = files.describe_images(images)
        prompt = engine.chat_prompt(inst, param["history"], config)
        tools = engine.tool_round(inst, config, messages_from_history(param["history"]))
    draft = drafting.requested_draft(config)
    draft_key = (
        None if draft is None else str(drafting.check_draft(state, inst.model, draft)["modelKey"])
    )
    outcome = await engine.predict(
        state, inst, config, prompt, ctx, ctx.runtime.tokens_per_second, tools, lead, draft_key
    )
    await ctx.send(
        {
            "type": "success",
            "stats": outcome.stats,
            "modelInfo": inst.info(),
            "loadModelConfig": config_fields(inst.config),
            "predictionConfig": config_fields(config),
        }
    )


def _preload_draft(conn: Connection, param: dict[str, Any]) -> Any:
    inst = _use(conn, param["specifier"], "llm")
    drafting.check_draft(_state(conn), inst.model, param["draftModelKey"])
    return VOID


async def _predict(ctx: ChannelContext, param: dict[str, Any]) -> None:
    await _run_prediction(ctx, param, None)


async def _complete_raw_text(ctx: ChannelContext, param: dict[str, Any]) -> None:
    await _run_prediction(ctx, param, param["rawPrompt"])


# --- system -------------------------------------------------------------------------------


def _list_downloaded(conn: Connection, _param: Any) -> Any:
    return [dict(m) for m in _state(conn).catalog]


def _list_variants(conn: Connection, param: dict[str, Any]) -> Any:
    low = param["modelKey"].lower()
    return [dict(m) for m in _state(conn).catalog if str(m["modelKey"]).lower() == low]


def _notify(conn: Connection, param: dict[str, Any]) -> Any:
    size = 100 + sum(len(v) for v in param.values() if isinstance(v, str))
    _state(conn).notifications.append(dict(param), size)
    return VOID


def _version(_conn: Connection, _param: Any) -> Any:
    return {"version": LMSTUDIO_VERSION, "build": LMSTUDIO_BUILD}


def _info(_conn: Connection, _param: Any) -> Any:
    return {"pid": os.getpid(), "isDaemon": False, "version": LMSTUDIO_VERSION}


def _get_flags(conn: Connection, _param: Any) -> Any:
    return sorted(_state(conn).experiment_flags)


#: Experiment flags the stand-in keeps at most, and the longest code (its state is bounded).
MAX_EXPERIMENT_FLAGS = 1000
MAX_FLAG_CODE = 256


def _set_flag(conn: Connection, param: dict[str, Any]) -> Any:
    flags = _state(conn).experiment_flags
    code = param["code"]
    if param["value"]:
        if len(code) > MAX_FLAG_CODE:
            raise err.StandInError(f"Experiment flag code longer than {MAX_FLAG_CODE} characters")
        if code not in flags and len(flags) >= MAX_EXPERIMENT_FLAGS:
            raise err.StandInError(
                f"Too many experiment flags set (the stand-in keeps {MAX_EXPERIMENT_FLAGS})"
            )
        flags.add(code)
    else:
        flags.discard(code)
    return VOID


async def _alive(ctx: ChannelContext, _param: Any) -> None:
    # Kept open until the connection closes; no packets in either direction.
    await asyncio.Event().wait()


# --- tables -------------------------------------------------------------------------------

_spec = s.model_specifier
_stack = s.kv_config_stack
# ChatHistoryData (lms-shared-types/src/ChatHistoryData.ts): which parts each role may hold.
_text_part = s.obj({"type": s.literal("text"), "text": s.string})
_file_part = s.obj(
    {
        "type": s.literal("file"),
        "name": s.string,
        "identifier": s.string,
        "sizeBytes": s.integer(),
        "fileType": s.literal(
            "image", "text/plain", "application/pdf", "application/word", "text/other", "unknown"
        ),
    }
)
_tool_call_request = s.tagged(
    "type",
    {
        "function": s.obj(
            {"type": s.literal("function"), "name": s.string},
            {"id": s.string, "arguments": s.record(s.anything)},
        )
    },
)
_request_part = s.obj(
    {"type": s.literal("toolCallRequest"), "toolCallRequest": _tool_call_request}
)
_result_part = s.obj(
    {"type": s.literal("toolCallResult"), "content": s.string},
    {"toolCallId": s.string, "name": s.string},
)


def _message(role: str, **parts: s.Check) -> s.Check:
    return s.obj({"role": s.literal(role), "content": s.array(s.tagged("type", parts))})


_history = s.obj(
    {
        "messages": s.array(
            s.tagged(
                "role",
                {
                    "assistant": _message(
                        "assistant", text=_text_part, file=_file_part, toolCallRequest=_request_part
                    ),
                    "user": _message("user", text=_text_part, file=_file_part),
                    "system": _message("system", text=_text_part, file=_file_part),
                    "tool": _message("tool", toolCallResult=_result_part),
                },
            )
        )
    }
)
# LLMTool (lms-shared-types/src/llm/LLMToolUseSetting.ts), for applyPromptTemplate's opts.
_tool = s.tagged(
    "type",
    {
        "function": s.obj(
            {
                "type": s.literal("function"),
                "function": s.obj(
                    {"name": s.string},
                    {
                        "description": s.string,
                        "parameters": s.tagged(
                            "type",
                            {
                                "object": s.obj(
                                    {
                                        "type": s.literal("object"),
                                        "properties": s.record(s.anything),
                                    },
                                    {
                                        "required": s.array(s.string),
                                        "additionalProperties": s.anything,
                                        "$defs": s.record(s.anything),
                                    },
                                )
                            },
                        ),
                    },
                ),
            }
        )
    },
)


def _model_namespace(domain: str) -> Namespace:
    rpc = {
        "listLoaded": RpcEndpoint(s.void, _list_loaded(domain)),
        "getModelInfo": RpcEndpoint(
            s.obj({"specifier": _spec, "throwIfNotFound": s.boolean}), _get_model_info(domain)
        ),
        "getLoadConfig": RpcEndpoint(s.obj({"specifier": _spec}), _get_load_config(domain)),
        "unloadModel": RpcEndpoint(
            s.obj({"identifier": s.string}, {"deviceIdentifier": _device}), _unload(domain)
        ),
        "estimateModelUsage": RpcEndpoint(
            s.obj({"modelKey": s.string, "loadConfigStack": _stack}, {"deviceIdentifier": _device}),
            _estimate(domain),
        ),
        "getInstanceProcessingState": RpcEndpoint(
            s.obj({"specifier": _spec, "throwIfNotFound": s.boolean}), _processing_state(domain)
        ),
        "getBasePredictionConfig": RpcEndpoint(s.anything, None),
        "tokenize": RpcEndpoint(
            s.obj({"specifier": _spec, "inputString": s.string}), _tokenize(domain)
        ),
        "countTokens": RpcEndpoint(
            s.obj({"specifier": _spec, "inputString": s.string}), _count_tokens(domain)
        ),
    }
    channels = {
        "loadModel": ChannelEndpoint(
            s.obj(
                {"modelKey": s.string, "loadConfigStack": _stack},
                {"identifier": s.string, "ttlMs": s.ttl, "deviceIdentifier": _device},
            ),
            _cancel_packet,
            _load_model(domain),
        ),
        "getOrLoad": ChannelEndpoint(
            s.obj(
                {"identifier": s.string, "loadConfigStack": _stack},
                {"loadTtlMs": s.ttl, "deviceIdentifier": _device},
            ),
            _cancel_packet,
            _get_or_load(domain),
        ),
    }
    if domain == "llm":
        rpc["applyPromptTemplate"] = RpcEndpoint(
            s.obj(
                {
                    "specifier": _spec,
                    "history": _history,
                    "predictionConfigStack": _stack,
                    "opts": s.obj(
                        {},
                        {
                            "omitBosToken": s.boolean,
                            "omitEosToken": s.boolean,
                            "toolDefinitions": s.array(_tool),
                        },
                    ),
                }
            ),
            _apply_prompt_template,
        )
        rpc["getBasePredictionConfig"] = RpcEndpoint(
            s.obj({"specifier": _spec}, {"ignoreServerSessionConfig": s.boolean}),
            _base_prediction_config,
        )
        rpc["preloadDraftModel"] = RpcEndpoint(
            s.obj({"specifier": _spec, "draftModelKey": s.string}), _preload_draft
        )
        options = {"fuzzyPresetIdentifier": s.string, "ignoreServerSessionConfig": s.boolean}
        channels["predict"] = ChannelEndpoint(
            s.obj(
                {"modelSpecifier": _spec, "history": _history, "predictionConfigStack": _stack},
                options,
            ),
            _cancel_packet,
            _predict,
        )
        channels["completeRawText"] = ChannelEndpoint(
            s.obj(
                {"modelSpecifier": _spec, "rawPrompt": s.string, "predictionConfigStack": _stack},
                options,
            ),
            _cancel_packet,
            _complete_raw_text,
        )
    else:
        rpc["embedString"] = RpcEndpoint(
            s.obj({"modelSpecifier": _spec, "inputString": s.string}), _embed_string
        )
    return Namespace(rpc, channels)


def _system_namespace() -> Namespace:
    rpc = {
        "listDownloadedModels": RpcEndpoint(s.void, _list_downloaded),
        "listDownloadedModelVariants": RpcEndpoint(s.obj({"modelKey": s.string}), _list_variants),
        "notify": RpcEndpoint(
            s.obj({"title": s.string}, {"description": s.string, "noAutoDismiss": s.boolean}),
            _notify,
        ),
        "version": RpcEndpoint(s.void, _version),
        "info": RpcEndpoint(s.void, _info),
        "getExperimentFlags": RpcEndpoint(s.void, _get_flags),
        "setExperimentFlag": RpcEndpoint(s.obj({"code": s.string, "value": s.boolean}), _set_flag),
        "startHttpServer": RpcEndpoint(s.anything, None),
        "stopHttpServer": RpcEndpoint(s.anything, None),
        "requestShutdown": RpcEndpoint(s.anything, None),
    }
    channels = {"alive": ChannelEndpoint(s.void, _never, _alive)}
    return Namespace(rpc, channels)


NAMESPACE_NAMES = (
    "llm",
    "embedding",
    "system",
    "files",
    "repository",
    "diagnostics",
    "plugins",
    "runtime",
)


def build_namespaces() -> dict[str, Namespace]:
    spaces = {name: Namespace({}, {}) for name in NAMESPACE_NAMES}
    spaces["llm"] = _model_namespace("llm")
    spaces["embedding"] = _model_namespace("embedding")
    spaces["system"] = _system_namespace()
    spaces["files"] = files.files_namespace()
    spaces["repository"] = hub.repository_namespace()
    return spaces
