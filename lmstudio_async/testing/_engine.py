"""The stand-in's prediction engine, shared by every interface (WebSocket, REST, OpenAI).

Nothing here knows about transports: a caller resolves an :class:`Instance`, builds the
prediction config (``llm.prediction.*`` keys) and a rendered prompt, then runs
:func:`predict` with a :class:`Sink` that receives the native prediction packets
(``promptProcessingProgress`` and ``fragment``, shaped as the WebSocket API sends them) and
is asked to wait between tokens. The WebSocket channel context is such a sink; the HTTP
handlers pass their own. Embeddings and token counts also live here, so every interface
gives the same numbers for the same input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import _draft as drafting
from . import _gbnf as gbnf
from . import _textgen as tg
from . import _toolcalls as tc
from ._errors import StandInError
from ._kvconfig import prediction_config
from ._state import Instance, ModelState

log = logging.getLogger("lmstudio_async.testing")

# Prompts with more uncached tokens than this get promptProcessingProgress packets.
PROMPT_PROGRESS_THRESHOLD = 64
# Prompt processing is simulated this many times faster than generation.
PROMPT_SPEEDUP = 10.0


class Sink(Protocol):
    """Where a running prediction sends its packets, and how it waits between them."""

    async def send(self, message: dict[str, Any]) -> None: ...

    async def wait_or_cancel(self, seconds: float) -> bool:
        """Sleep (at least one loop turn); return ``True`` once the caller wants to stop."""
        ...


# --- inputs ---------------------------------------------------------------------------------


def resolve_config(inst: Instance, received: dict[str, Any]) -> dict[str, Any]:
    """The effective prediction config for ``inst`` given collapsed ``llm.prediction.*`` keys."""
    return prediction_config(received, tg.default_prompt_template(inst.model))


def chat_prompt(
    inst: Instance, history: dict[str, Any], config: dict[str, Any]
) -> tg.RenderedPrompt:
    """Render a ChatHistoryData (``{"messages": [...]}``) for a prediction."""
    return tg.render_prompt(
        inst.model, history, config["llm.prediction.promptTemplate"], prediction=True
    )


def raw_prompt(text: str) -> tg.RenderedPrompt:
    """A text-completion prompt: the model continues ``text`` as is."""
    return tg.RenderedPrompt(text, raw=True, topic_text=text[-1000:])


# --- the generated text ---------------------------------------------------------------------


@dataclass
class Plan:
    fragments: list[str]
    stop_reason: str
    stop_string: str | None = None


def checkbox_value(value: Any) -> Any:
    """The value of a ``{"checked": true, "value": ...}`` setting, else ``None``."""
    if isinstance(value, dict) and value.get("checked") is True:
        return value.get("value")
    return None


def plan(text: str, config: dict[str, Any], prompt_tokens: int, context_length: int) -> Plan:
    """Cut the full generated text at stop strings, maxPredictedTokens and the context limit."""
    fragments = tg.split_fragments(text)
    result = Plan(fragments, "eosFound")
    stops = [x for x in config.get("llm.prediction.stopStrings", []) if isinstance(x, str) and x]
    found: tuple[int, int, str] | None = None  # (end, start, stop string)
    for stop in stops:
        start = text.find(stop)
        if start >= 0 and (found is None or start + len(stop) < found[0]):
            found = (start + len(stop), start, stop)
    if found is not None:
        cut = found[1]
        kept: list[str] = []
        offset = 0
        for piece in fragments:
            if offset + len(piece) <= cut:
                kept.append(piece)
            elif offset < cut:
                kept.append(piece[: cut - offset])
            offset += len(piece)
        result = Plan(kept, "stopStringFound", found[2])
    limit = checkbox_value(config.get("llm.prediction.maxPredictedTokens"))
    if (
        isinstance(limit, int)
        and not isinstance(limit, bool)
        and limit >= 0
        and len(result.fragments) > limit
    ):
        result = Plan(result.fragments[:limit], "maxPredictedTokensReached")
    if config.get("llm.prediction.contextOverflowPolicy") == "stopAtLimit":
        room = max(0, context_length - prompt_tokens)
        if len(result.fragments) > room:
            result = Plan(result.fragments[:room], "contextLengthReached")
    return result


# A special token (``<|...|>``) is at most this long: so much text after the last kept
# token settles how that token and the ones before it are split.
_LONGEST_SPECIAL_TOKEN = 68


def token_cap(config: dict[str, Any], prompt_tokens: int, context_length: int) -> int | None:
    """The most tokens :func:`plan` keeps (``maxPredictedTokens``, and the room left in the
    context with ``stopAtLimit``), or ``None`` when nothing caps the output."""
    caps: list[int] = []
    limit = checkbox_value(config.get("llm.prediction.maxPredictedTokens"))
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
        caps.append(limit)
    if config.get("llm.prediction.contextOverflowPolicy") == "stopAtLimit":
        caps.append(max(0, context_length - prompt_tokens))
    return min(caps) if caps else None


def enough_text(
    config: dict[str, Any], lead: str, prompt_tokens: int, context_length: int
) -> Callable[[str], bool] | None:
    """A test for a structured-output generator: given the text generated so far, whether
    :func:`plan` would cut ``lead`` + that text exactly as it cuts the whole output (more
    tokens than the cap, and enough text after the last kept token for its split and for
    any stop string starting in the kept part). ``None`` when nothing caps the output.

    LM Studio samples constrained tokens one by one and stops at the cap; the stand-in
    derives a whole document first, so without this a schema or grammar asking for a huge
    text would be derived in full for a five-token answer.
    """
    cap = token_cap(config, prompt_tokens, context_length)
    if cap is None:
        return None
    stops = [x for x in config.get("llm.prediction.stopStrings", []) if isinstance(x, str)]
    margin = max([_LONGEST_SPECIAL_TOKEN, *(len(x) for x in stops)])

    def enough(text: str) -> bool:
        full = lead + text
        end = 0  # where the cap-th token ends
        for count, match in enumerate(tg.TOKEN_RE.finditer(full)):
            if count == cap:  # a token beyond the cap
                return len(full) - end >= margin
            end = match.end()
        return False

    return enough


def gbnf_grammar(structured: Any) -> str | None:
    """The grammar of a ``{"type": "gbnf", "gbnfGrammar": ...}`` setting, else ``None``."""
    if isinstance(structured, dict) and structured.get("type") == "gbnf":
        grammar = structured.get("gbnfGrammar")
        if isinstance(grammar, str):
            return grammar
    return None


def invalid_grammar(reason: str) -> StandInError:
    return StandInError(f"Invalid GBNF grammar: {reason}")


def invalid_schema(reason: str) -> StandInError:
    key = "llm.prediction.structured"
    return StandInError(
        f'Invalid value for prediction config key "{key}"',
        cause=f"jsonSchema: {reason}",
        suggestion="Check the JSON schema (and its $ref / anyOf / allOf definitions).",
    )


def grammar_text(
    grammar: str,
    rng: random.Random,
    topic_text: str,
    enough: Callable[[str], bool] | None = None,
) -> str:
    """Text the GBNF ``grammar`` accepts, spelled from the prompt's words (``_gbnf``)."""
    words = [w.lower() for w in re.findall(r"[^\W\d_]{3,}", topic_text)[-50:]]
    try:
        return gbnf.generate(grammar, rng, words or ["text"], enough)
    except gbnf.GrammarError as exc:
        raise invalid_grammar(str(exc)) from None


def generate(
    inst: Instance,
    config: dict[str, Any],
    prompt: tg.RenderedPrompt,
    enough: Callable[[str], bool] | None = None,
) -> str:
    """The full text the model would produce for this prompt and config (deterministic).

    With ``enough`` (see :func:`enough_text`) structured output may end early, where the
    output would be cut anyway. A JSON schema or grammar that cannot be followed raises the
    typed :class:`StandInError` (``Invalid value for prediction config key`` /
    ``Invalid GBNF grammar``).
    """
    temperature = config.get("llm.prediction.temperature", 0.8)
    seed_setting = checkbox_value(inst.config.get("llm.load.seed"))
    seed = seed_setting if isinstance(seed_setting, int) and seed_setting >= 0 else -1
    structured = config.get("llm.prediction.structured", {"type": "none"})
    json_mode = isinstance(structured, dict) and structured.get("type") == "json"
    grammar = gbnf_grammar(structured)
    if grammar is not None and len(grammar) > gbnf.MAX_GRAMMAR:  # (before hashing it)
        raise invalid_grammar(f"the grammar is longer than {gbnf.MAX_GRAMMAR} characters")
    try:
        rng = random.Random(
            tg.generation_seed(
                inst.model_key,
                None if temperature == 0 else seed,  # greedy decoding ignores the seed
                prompt.text,
                temperature,
                config.get("llm.prediction.topKSampling"),
                config.get("llm.prediction.topPSampling"),
                config.get("llm.prediction.minPSampling"),
                config.get("llm.prediction.repeatPenalty"),
                structured if json_mode or grammar is not None else None,
            )
        )
        if json_mode:
            schema = structured.get("jsonSchema")
            return tg.generate_json(rng, schema, prompt.topic_source, enough)
    except tg.SchemaError as exc:
        raise invalid_schema(str(exc)) from None
    except RecursionError:  # a schema nested about a thousand levels deep
        raise invalid_schema("it nests too deeply") from None
    if grammar is not None:
        return grammar_text(grammar, rng, prompt.topic_source, enough)
    lead_space = prompt.raw and bool(prompt.text) and not prompt.text[-1].isspace()
    return tg.generate_text(rng, prompt.topic_source, chat=not prompt.raw, lead_space=lead_space)


def tool_round(
    inst: Instance, config: dict[str, Any], messages: list[tc.Message]
) -> tc.ToolRound | None:
    """What a tool-using model does this round, or ``None`` when tools play no part.

    Tools apply when the catalogue entry has ``trainedForToolUse``, the config offers tools
    (``llm.prediction.tools``) and no structured output is requested; see ``_toolcalls``.
    """
    if not inst.model.get("trainedForToolUse"):
        return None
    structured = config.get("llm.prediction.structured")
    if isinstance(structured, dict) and structured.get("type", "none") != "none":
        return None
    tools = tc.tools_from_setting(config.get("llm.prediction.tools"))
    if not tools:
        return None
    planned = tc.plan_tool_round(messages, tools)
    if planned.text is None and not planned.calls:
        return None
    return planned


async def _send_tool_calls(sink: Sink, calls: tuple[tc.PlannedCall, ...]) -> int:
    """Stream LM Studio's tool-call packets for ``calls``; returns the tokens they took."""
    tokens = 0
    for call in calls:
        raw = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
        tokens += max(1, tg.count_tokens(raw))
        await sink.send({"type": "toolCallGenerationStart", "toolCallId": call.id})
        await sink.send({"type": "toolCallGenerationNameReceived", "name": call.name})
        args = json.dumps(call.arguments, ensure_ascii=False)
        for piece in tg.split_fragments(args) or [args]:
            await sink.send(
                {"type": "toolCallGenerationArgumentFragmentGenerated", "content": piece}
            )
        request = {
            "type": "function",
            "id": call.id,
            "name": call.name,
            "arguments": call.arguments,
        }
        await sink.send(
            {"type": "toolCallGenerationEnd", "toolCallRequest": request, "rawContent": raw}
        )
    return tokens


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# --- running a prediction -------------------------------------------------------------------


@dataclass
class Outcome:
    """What a finished prediction produced: the emitted fragments and LM Studio's stats."""

    fragments: list[str]
    stats: dict[str, Any]

    @property
    def text(self) -> str:
        return "".join(self.fragments)

    @property
    def stop_reason(self) -> str:
        return str(self.stats["stopReason"])

    @property
    def prompt_tokens(self) -> int:
        return int(self.stats["promptTokensCount"])

    @property
    def predicted_tokens(self) -> int:
        return int(self.stats["predictedTokensCount"])


async def predict(
    state: ModelState,
    inst: Instance,
    config: dict[str, Any],
    prompt: tg.RenderedPrompt,
    sink: Sink,
    tokens_per_second: float,
    tools: tc.ToolRound | None = None,
    lead: str = "",
    draft_key: str | None = None,
) -> Outcome:
    """Stream one prediction into ``sink`` at ``tokens_per_second`` and return its outcome.

    Simulates prompt processing (with the instance's prompt cache), stops early when the sink
    asks to or when the instance goes away, and updates the instance's idle timer and cache.
    With ``tools`` (from :func:`tool_round`) the text is its text, followed by its tool-call
    packets (stop reason ``toolCalls``) when the text was emitted in full. ``lead`` is text
    the model says first (a vision model's description of the prompt's images). With
    ``draft_key`` (a checked draft model, ``_draft``) fragments and stats carry draft data.
    The instance counts as busy meanwhile (its TTL waits, auto-evict waits for it during
    its grace).
    """
    state.begin_work(inst)
    try:
        return await _predict(
            state, inst, config, prompt, sink, tokens_per_second, tools, lead, draft_key
        )
    finally:
        state.end_work(inst)


async def _predict(
    state: ModelState,
    inst: Instance,
    config: dict[str, Any],
    prompt: tg.RenderedPrompt,
    sink: Sink,
    tokens_per_second: float,
    tools: tc.ToolRound | None,
    lead: str,
    draft_key: str | None,
) -> Outcome:
    prompt_ids = tg.tokenize(prompt.text)
    total = len(prompt_ids)
    if tools is not None and tools.text is not None:
        text = tools.text
    else:
        enough = enough_text(config, lead, total, inst.context_length)
        text = generate(inst, config, prompt, enough)
    cut = plan(lead + text, config, total, inst.context_length)

    rate = tokens_per_second
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop_reason = cut.stop_reason
    cancelled = False
    cached = _common_prefix(inst.prompt_cache, prompt_ids)
    todo = total - cached
    if todo > PROMPT_PROGRESS_THRESHOLD:
        steps = min(10, max(2, math.ceil(todo / PROMPT_PROGRESS_THRESHOLD)))
        delay = todo / (rate * PROMPT_SPEEDUP) / steps
        for step in range(steps + 1):
            if step and await sink.wait_or_cancel(delay):
                cancelled = True
                break
            done = todo * step // steps
            await sink.send(
                {
                    "type": "promptProcessingProgress",
                    "progress": step / steps,
                    "details": {
                        "cachedTokenCount": cached,
                        "totalPromptTokenCount": total,
                        "processedPromptTokenCount": done,
                        "unprocessedPromptTokenCount": todo - done,
                    },
                }
            )
    emitted: list[str] = []
    first_token_at: float | None = None
    generation_start = loop.time()
    for index, piece in enumerate(cut.fragments):
        if cancelled:
            break
        wait = generation_start + (index + 1) / rate - loop.time()
        if await sink.wait_or_cancel(wait):
            cancelled = True
            break
        if not state.is_loaded(inst):
            stop_reason = "modelUnloaded"
            break
        state.touch(inst)
        await sink.send(
            {
                "type": "fragment",
                "fragment": {
                    "content": piece,
                    "tokensCount": 1,
                    "containsDrafted": draft_key is not None
                    and drafting.accepted(draft_key, index, piece),
                    "reasoningType": "none",
                    "isStructural": False,
                },
            }
        )
        emitted.append(piece)
        if first_token_at is None:
            first_token_at = loop.time()
    if cancelled:
        stop_reason = "userStopped"
    call_tokens = 0
    if tools is not None and tools.calls and stop_reason == "eosFound":
        call_tokens = await _send_tool_calls(sink, tools.calls)
        stop_reason = "toolCalls"
    finished = loop.time()
    predicted = len(emitted) + call_tokens
    stats: dict[str, Any] = {"stopReason": stop_reason}
    if stop_reason == "stopStringFound" and cut.stop_string is not None:
        stats["stopString"] = cut.stop_string
    if predicted:
        elapsed = finished - generation_start
        stats["tokensPerSecond"] = round(predicted / elapsed if elapsed > 0 else rate, 3)
    if first_token_at is not None:
        stats["timeToFirstTokenSec"] = round(first_token_at - started, 6)
    stats["totalTimeSec"] = round(finished - started, 6)
    stats["promptTokensCount"] = total
    stats["predictedTokensCount"] = predicted
    stats["totalTokensCount"] = total + predicted
    if draft_key is not None:
        stats.update(drafting.draft_stats(draft_key, emitted))
    if state.is_loaded(inst):
        state.touch(inst)
        inst.prompt_cache = prompt_ids + tg.tokenize("".join(emitted))
    return Outcome(emitted, stats)


# --- embeddings and tokens ------------------------------------------------------------------


def embedded_tokens(inst: Instance, text: str) -> int:
    """How many tokens of ``text`` :func:`embed` uses (its input is truncated to the
    instance's context)."""
    return min(tg.count_tokens(text), max(inst.context_length - len(tg.EMBEDDING_MARKERS), 0))


def embed(inst: Instance, text: str) -> list[float]:
    """The embedding vector ``inst`` gives ``text``: of its first tokens only when it is
    longer than the instance's context (LM Studio truncates, and logs that it did)."""
    room = inst.context_length - len(tg.EMBEDDING_MARKERS)
    cut = tg.first_tokens(text, room)
    if len(cut) < len(text.rstrip()):
        log.info(
            "embedding input on %r exceeds its context length (%d tokens); truncated",
            inst.identifier,
            inst.context_length,
        )
        text = cut
    return tg.embed(inst.model, text)


def tokenize(text: str) -> list[int]:
    return tg.tokenize(text)


def count_tokens(text: str) -> int:
    return tg.count_tokens(text)
