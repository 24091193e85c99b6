"""What the inference endpoints send back (protocol.md §4.11, §7.5): pure, no I/O.

The ``predict`` / ``completeRawText`` channel packets (:class:`Fragment`, prompt-processing
progress, tool-call events, ``success``), :class:`PredictionStats`,
:class:`PredictionResult`, and the replies of ``tokenize``, ``countTokens``,
``applyPromptTemplate`` and ``embedString``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar, cast

import msgspec
import msgspec.structs

from lmstudio_async._protocol.info import LlmInstanceInfo
from lmstudio_async._protocol.kvconfig import KvConfig, fields_to_load_config
from lmstudio_async._protocol.prediction import PredictionConfig, fields_to_prediction_config
from lmstudio_async._protocol.tools import ToolCallRequest
from lmstudio_async.config import LlmLoadConfig
from lmstudio_async.errors import StructuredOutputError

__all__ = [
    "PREDICTION_PACKET_DECODER",
    "EmbeddingReply",
    "FormattedReply",
    "Fragment",
    "FragmentPacket",
    "PredictionPacket",
    "PredictionResult",
    "PredictionRoundResult",
    "PredictionStats",
    "PredictionSuccess",
    "PromptProcessingProgress",
    "ReasoningType",
    "StopReason",
    "StructuredResult",
    "TokenCountReply",
    "TokensReply",
    "ToolCallEndPacket",
    "ToolCallFailedPacket",
    "result_from_success",
]

StopReason: TypeAlias = Literal[
    "userStopped",
    "modelUnloaded",
    "failed",
    "eosFound",
    "stopStringFound",
    "toolCalls",
    "maxPredictedTokensReached",
    "contextLengthReached",
]
"""Why a prediction ended (``PredictionStats.stop_reason`` is kept as ``str`` so that
values added by future LM Studio releases still decode)."""

ReasoningType: TypeAlias = Literal["none", "reasoning", "reasoningStartTag", "reasoningEndTag"]
"""Whether a fragment is part of the model's reasoning (``Fragment.reasoning_type``)."""


class Fragment(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A piece of generated text, as it arrives."""

    content: str
    """The text."""
    tokens_count: int = 0
    """How many tokens it holds."""
    contains_drafted: bool = False
    """Whether it contains tokens from the draft model (speculative decoding)."""
    reasoning_type: str = "none"
    """A :data:`ReasoningType`: ``"none"``, ``"reasoning"``, ``"reasoningStartTag"`` or
    ``"reasoningEndTag"``."""
    is_structural: bool = False
    """Structural (e.g. a reasoning tag) rather than content."""


class PredictionStats(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Statistics of a finished prediction (``None``: not reported by the server)."""

    stop_reason: str
    """A :data:`StopReason`, e.g. ``"eosFound"``, ``"maxPredictedTokensReached"``,
    ``"stopStringFound"``, ``"userStopped"``."""
    stop_string: str | None = None
    """The stop string that ended it (with ``"stopStringFound"``)."""
    tokens_per_second: float | None = None
    """Generation speed."""
    time_to_first_token_sec: float | None = None
    """Seconds until the first token."""
    total_time_sec: float | None = None
    """Seconds the whole prediction took."""
    prompt_tokens_count: int | None = None
    """Tokens in the prompt."""
    predicted_tokens_count: int | None = None
    """Tokens generated."""
    total_tokens_count: int | None = None
    """Prompt plus generated tokens."""
    num_gpu_layers: float | None = None
    """Layers offloaded to the GPU."""
    used_draft_model_key: str | None = None
    """Draft model used for speculative decoding."""
    total_draft_tokens_count: int | None = None
    """Draft tokens generated."""
    accepted_draft_tokens_count: int | None = None
    """Draft tokens accepted."""
    rejected_draft_tokens_count: int | None = None
    """Draft tokens rejected."""
    ignored_draft_tokens_count: int | None = None
    """Draft tokens ignored."""


class _Packet(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    pass


class FragmentPacket(_Packet, tag="fragment"):
    """``{"type": "fragment", "fragment": {...}}``."""

    fragment: Fragment


class PromptProcessingProgress(_Packet, tag="promptProcessingProgress"):
    """Prompt processing progress in [0, 1]."""

    progress: float


class PredictionSuccess(_Packet, tag="success"):
    """Terminal packet: stats, the instance, and the effective configs."""

    stats: PredictionStats
    model_info: LlmInstanceInfo
    load_model_config: KvConfig = msgspec.field(default_factory=KvConfig)
    prediction_config: KvConfig = msgspec.field(default_factory=KvConfig)


class _ToolCallStart(_Packet, tag="toolCallGenerationStart"):
    pass


class _ToolCallName(_Packet, tag="toolCallGenerationNameReceived"):
    pass


class _ToolCallArgument(_Packet, tag="toolCallGenerationArgumentFragmentGenerated"):
    pass


class _WireToolCallRequest(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    arguments: dict[str, Any] | None = None
    id: str | None = None


class ToolCallEndPacket(_Packet, tag="toolCallGenerationEnd"):
    """The model finished writing a tool call."""

    tool_call_request: _WireToolCallRequest
    raw_content: str | None = None

    def request(self) -> ToolCallRequest:
        """The call as a :class:`ToolCallRequest` (missing arguments become ``{}``)."""
        wire = self.tool_call_request
        return ToolCallRequest(name=wire.name, arguments=wire.arguments or {}, id=wire.id)


class ToolCallFailedPacket(_Packet, tag="toolCallGenerationFailed"):
    """The model wrote a tool call LM Studio could not parse."""

    error: Any = None
    raw_content: str | None = None


PredictionPacket: TypeAlias = (
    FragmentPacket
    | PromptProcessingProgress
    | PredictionSuccess
    | _ToolCallStart
    | _ToolCallName
    | _ToolCallArgument
    | ToolCallEndPacket
    | ToolCallFailedPacket
)
PREDICTION_PACKET_DECODER: msgspec.json.Decoder[PredictionPacket] = msgspec.json.Decoder(
    PredictionPacket
)


class TokensReply(msgspec.Struct, frozen=True):
    """``tokenize`` result."""

    tokens: list[int]


class TokenCountReply(msgspec.Struct, frozen=True, rename="camel"):
    """``countTokens`` result."""

    token_count: int


class EmbeddingReply(msgspec.Struct, frozen=True):
    """``embedString`` result."""

    embedding: list[float]


class FormattedReply(msgspec.Struct, frozen=True):
    """``applyPromptTemplate`` result."""

    formatted: str


_NOT_PARSED: Final[Any] = msgspec.UNSET


@dataclasses.dataclass(frozen=True, slots=True)
class PredictionResult:
    """The outcome of :meth:`LLM.respond` / :meth:`LLM.complete` (or a finished stream)."""

    content: str
    """The full generated text."""
    stats: PredictionStats
    """Token counts, speed, time to first token, stop reason."""
    model_info: LlmInstanceInfo
    """The instance that answered."""
    prediction_config: PredictionConfig
    """The effective prediction config the server reported (the fields we can represent)."""
    load_config: LlmLoadConfig
    """The instance's load config, as the server reported it."""
    tool_calls: tuple[ToolCallRequest, ...] = ()
    """The tool calls the model asked for (``respond(..., tools=...)``), in order; the
    prediction then ends with stop reason ``"toolCalls"``."""
    _parsed: Any = dataclasses.field(default=_NOT_PARSED, repr=False, compare=False)

    def __str__(self) -> str:
        return self.content

    @property
    def stop_reason(self) -> str:
        """Why the prediction ended (``stats.stop_reason``)."""
        return self.stats.stop_reason

    @property
    def parsed(self) -> Any:
        """The structured reply: with ``respond(..., response_format=T)`` an instance of
        ``T`` (validated when the prediction finished); otherwise ``content`` decoded as
        JSON (:class:`~lmstudio_async.StructuredOutputError` if it is not JSON)."""
        if self._parsed is not _NOT_PARSED:
            return self._parsed
        try:
            return msgspec.json.decode(self.content)
        except msgspec.DecodeError as exc:
            raise StructuredOutputError(
                f"the reply is not JSON{self._cut_short()}: {exc}",
                content=self.content,
                result=self,
            ) from None

    def _with_content(self, content: str) -> PredictionResult:
        """This result holding ``content`` instead: what a reader that left the stream
        early was given. A parsed value of the whole reply does not go with it, and its
        stop reason is ``"userStopped"``: the reply was cut short by its reader, even when
        the model had finished it (a cut reply never says ``"eosFound"``)."""
        return self if content == self.content else self._cut_to(content)

    def _cut_to(self, content: str) -> PredictionResult:
        """This result holding ``content``, the part of the reply its reader was given
        before it left, and stopped by that reader (see :meth:`_with_content`)."""
        stats = msgspec.structs.replace(self.stats, stop_reason="userStopped", stop_string=None)
        return dataclasses.replace(self, content=content, stats=stats, _parsed=_NOT_PARSED)

    def _cut_short(self) -> str:
        """`` (it stopped: REASON)`` when the model did not end the reply itself, else ``""``:
        for an error about the reply's content."""
        stop = self.stop_reason
        return "" if stop in ("eosFound", "stopStringFound") else f" (it stopped: {stop})"


_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True, slots=True)
class StructuredResult(PredictionResult, Generic[_T]):
    """What :meth:`LLM.respond` returns with ``response_format=T`` a type: a
    :class:`PredictionResult` whose :attr:`parsed` is typed ``T`` for type checkers too."""

    @property
    def parsed(self) -> _T:
        """The reply decoded into the ``response_format`` type (validated when the
        prediction finished)."""
        return cast(_T, PredictionResult.parsed.__get__(self))

    @classmethod
    def of(cls, result: PredictionResult, parsed: Any) -> StructuredResult[Any]:
        """``result`` with its reply decoded as ``parsed``."""
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(PredictionResult)}
        return cls(**{**fields, "_parsed": parsed})


@dataclasses.dataclass(frozen=True, slots=True)
class PredictionRoundResult(PredictionResult):
    """The result of one prediction round of :meth:`LLM.act` (``on_prediction_completed``)."""

    round_index: int = 0
    """Which round (from 0)."""


_KV_ENCODER: Final = msgspec.json.Encoder()
_KV_DECODER: Final = msgspec.json.Decoder(KvConfig)


# A model's load config and a caller's prediction config repeat from one prediction to the
# next (every round of ``act``): map each distinct one once. Both results are frozen.
@functools.lru_cache(maxsize=256)
def _load_config_of(raw: bytes) -> LlmLoadConfig:
    return fields_to_load_config("llm", _KV_DECODER.decode(raw))


@functools.lru_cache(maxsize=256)
def _prediction_config_of(raw: bytes) -> PredictionConfig:
    return fields_to_prediction_config(_KV_DECODER.decode(raw))


def result_from_success(
    content: str,
    packet: PredictionSuccess,
    tool_calls: Sequence[ToolCallRequest] = (),
) -> PredictionResult:
    """Build a :class:`PredictionResult` from the text and the ``success`` packet."""
    return PredictionResult(
        content=content,
        stats=packet.stats,
        model_info=packet.model_info,
        prediction_config=_prediction_config_of(_KV_ENCODER.encode(packet.prediction_config)),
        load_config=_load_config_of(_KV_ENCODER.encode(packet.load_model_config)),
        tool_calls=tuple(tool_calls),
    )
