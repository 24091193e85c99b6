"""A typed chat history (:class:`Chat`, :class:`ChatMessage`) and its wire form: pure, no I/O.

A :class:`Chat` becomes the ``ChatHistoryData`` of the ``predict`` channel and of
``applyPromptTemplate``; :meth:`Chat.from_history` reads the official SDKs' history shape
back, and :func:`coerce_chat` turns whatever ``respond`` accepts into a :class:`Chat`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import msgspec
import msgspec.structs

from lmstudio_async._protocol.files import FileHandle
from lmstudio_async._protocol.results import PredictionResult
from lmstudio_async._protocol.tools import ToolCallRequest, ToolCallResult, encode_tool_result
from lmstudio_async.errors import LMStudioValueError

__all__ = ["Chat", "ChatInput", "ChatMessage", "Role", "coerce_chat"]

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
"""Role of a :class:`ChatMessage`."""

_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")



def _items(value: object, what: str) -> tuple[Any, ...]:
    """``value`` (a list or tuple; ``None`` for none) as a tuple; anything else is an
    :class:`LMStudioValueError` naming ``what``."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise LMStudioValueError(f"{what} must be a list, got {type(value).__name__}")
    return tuple(value)

class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One message of a :class:`Chat`.

    ``role`` is system, user, assistant or tool; ``content`` its text. A user message may
    carry ``images`` (:class:`FileHandle`; so may system and assistant messages, as in
    LM Studio's chat history schema), an assistant message the ``tool_calls`` it made, a
    tool message the ``tool_results`` it returns.
    """

    role: Role
    content: str = ""
    images: tuple[FileHandle, ...] = ()
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_results: tuple[ToolCallResult, ...] = ()

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise LMStudioValueError(
                "chat message role must be 'system', 'user', 'assistant' or 'tool', "
                f"got {self.role!r}"
            )
        if not isinstance(self.content, str):
            raise LMStudioValueError(
                f"chat message content must be a string, got {type(self.content).__name__}"
            )
        for name, kind, roles in (
            ("images", FileHandle, ("user", "system", "assistant")),
            ("tool_calls", ToolCallRequest, ("assistant",)),
            ("tool_results", ToolCallResult, ("tool",)),
        ):
            value = getattr(self, name)
            if isinstance(value, list):
                value = tuple(value)
                msgspec.structs.force_setattr(self, name, value)
            if not isinstance(value, tuple) or not all(isinstance(v, kind) for v in value):
                raise LMStudioValueError(
                    f"chat message {name} must be a list of {kind.__name__}, got {value!r}"
                )
            if value and self.role not in roles:
                raise LMStudioValueError(f"a {self.role} message carries no {name}")
        if self.role == "tool" and not self.tool_results:
            raise LMStudioValueError("a tool message needs at least one tool result")

    def to_wire(self) -> dict[str, Any]:
        """The wire message: ``{"role": ..., "content": [parts]}``."""
        parts: list[dict[str, Any]] = []
        if self.role == "tool":
            parts.extend(r.to_wire() for r in self.tool_results)
        else:
            if self.content or not (self.images or self.tool_calls):
                parts.append({"type": "text", "text": self.content})
            parts.extend(i.to_wire() for i in self.images)
            parts.extend(
                {"type": "toolCallRequest", "toolCallRequest": c.to_wire()} for c in self.tool_calls
            )
        return {"role": self.role, "content": parts}


def _message_from_wire(index: int, raw: object) -> ChatMessage:
    """A :class:`ChatMessage` from the official SDKs' chat history message shape."""
    if not isinstance(raw, Mapping):
        raise LMStudioValueError(f"chat message {index} must be a dict, got {type(raw).__name__}")
    role, content = raw.get("role"), raw.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise LMStudioValueError(
            f"chat message {index}: content must be a string or a list of parts, got "
            f"{type(content).__name__}"
        )
    texts: list[str] = []
    images: list[FileHandle] = []
    calls: list[ToolCallRequest] = []
    results: list[ToolCallResult] = []
    for number, part in enumerate(content):
        where = f"chat message {index}, part {number}"
        if isinstance(part, str):
            part = {"type": "text", "text": part}
        if not isinstance(part, Mapping):
            raise LMStudioValueError(f"{where} must be a dict, got {type(part).__name__}")
        kind = part.get("type", "text" if "text" in part else None)
        try:
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise LMStudioValueError(f"{where}: 'text' must be a string")
                texts.append(text)
            elif kind == "file":
                images.append(
                    FileHandle(
                        name=part["name"],
                        identifier=part["identifier"],
                        size_bytes=part.get("sizeBytes", part.get("size_bytes", 0)),
                        file_type=part.get("fileType", part.get("file_type", "unknown")),
                    )
                )
            elif kind == "toolCallRequest":
                request = part.get("toolCallRequest", part.get("tool_call_request"))
                calls.append(msgspec.convert(request, ToolCallRequest))
            elif kind == "toolCallResult":
                call_id = part.get("toolCallId", part.get("tool_call_id"))
                results.append(ToolCallResult(content=part["content"], tool_call_id=call_id))
            else:
                raise LMStudioValueError(f"{where}: unknown part type {kind!r}")
        except (KeyError, TypeError, msgspec.ValidationError) as exc:
            raise LMStudioValueError(f"{where} ({kind}) is malformed: {exc}") from None
    return ChatMessage(
        role=role,  # type: ignore[arg-type]  # checked by ChatMessage
        content="\n\n".join(texts),
        images=tuple(images),
        tool_calls=tuple(calls),
        tool_results=tuple(results),
    )


class Chat:
    """A chat history for :meth:`LLM.respond` and :meth:`LLM.act`: a list of :class:`ChatMessage`.

    ::

        chat = Chat("You are terse.")  # optional system prompt
        chat.add_user("Name a colour.")
        reply = await llm.respond(chat)
        chat.add_assistant(reply)

    ``respond`` also takes a plain string (one user message), a list of
    ``{"role": ..., "content": ...}`` dicts / :class:`ChatMessage`, or the official SDKs'
    history dict ``{"messages": [...]}`` (see :meth:`from_history`).
    """

    __slots__ = ("_messages",)

    def __init__(self, system: str | None = None) -> None:
        self._messages: list[ChatMessage] = []
        if system is not None:
            self.add_system(system)

    def __repr__(self) -> str:
        return f"Chat({self._messages!r})"

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[ChatMessage]:
        return iter(self._messages)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Chat):
            return NotImplemented
        return self._messages == other._messages

    __hash__ = None  # type: ignore[assignment]

    @property
    def messages(self) -> tuple[ChatMessage, ...]:
        """The messages, oldest first."""
        return tuple(self._messages)

    def append(self, message: ChatMessage) -> Chat:
        """Append a :class:`ChatMessage`; returns the chat (for chaining)."""
        if not isinstance(message, ChatMessage):
            raise LMStudioValueError(f"expected a ChatMessage, got {type(message).__name__}")
        self._messages.append(message)
        return self

    def add(self, role: Role, content: str) -> Chat:
        """Append a text message; returns the chat (for chaining)."""
        return self.append(ChatMessage(role=role, content=content))

    def add_system(self, content: str) -> Chat:
        """Append a system message; returns the chat."""
        return self.add("system", content)

    def add_user(
        self, content: str, *, images: Sequence[FileHandle] | FileHandle | None = ()
    ) -> Chat:
        """Append a user message, with optional ``images`` (handles from
        :meth:`FilesNamespace.prepare_image`; ``None``: none); returns the chat."""
        if isinstance(images, FileHandle):
            images = (images,)
        elif isinstance(images, str | bytes | os.PathLike):
            raise LMStudioValueError(
                "images takes FileHandles from client.files.prepare_image(...), "
                f"not a path or bytes (got {type(images).__name__})"
            )
        return self.append(
            ChatMessage(role="user", content=content, images=_items(images, "images"))
        )

    def add_assistant(
        self, content: str | PredictionResult, *, tool_calls: Sequence[ToolCallRequest] = ()
    ) -> Chat:
        """Append an assistant message; returns the chat.

        ``content`` is the text, or a :class:`PredictionResult` (its text and the tool calls
        it asked for). ``tool_calls`` adds tool calls the assistant made.
        """
        if isinstance(content, PredictionResult):
            tool_calls = (*content.tool_calls, *tool_calls)
            content = content.content
        return self.append(
            ChatMessage(
                role="assistant", content=content, tool_calls=_items(tool_calls, "tool_calls")
            )
        )

    def add_tool_result(self, call: ToolCallRequest | str | None, result: Any) -> Chat:
        """Append the result of one tool call; returns the chat.

        ``call`` is the :class:`ToolCallRequest` (or its id); ``result`` is what the tool
        returned: its JSON is what the model reads (as ``act`` sends it), so a string
        arrives as a JSON string. Raises :class:`LMStudioValueError` for a value with no
        JSON form.
        """
        call_id = call.id if isinstance(call, ToolCallRequest) else call
        if call_id is not None and not isinstance(call_id, str):
            raise LMStudioValueError(
                f"call must be a ToolCallRequest or its id, got {type(call).__name__}"
            )
        try:
            text = encode_tool_result(result)
        except (TypeError, ValueError) as exc:
            raise LMStudioValueError(f"the tool result has no JSON form: {exc}") from None
        return self.append(
            ChatMessage(
                role="tool", tool_results=(ToolCallResult(content=text, tool_call_id=call_id),)
            )
        )

    def copy(self) -> Chat:
        """A new chat with the same messages."""
        chat = Chat()
        chat._messages = list(self._messages)
        return chat

    @classmethod
    def from_history(cls, history: object) -> Chat:
        """A chat from the official SDKs' history: ``{"messages": [{"role": ..., "content":
        [parts]}]}`` (parts ``text``, ``file``, ``toolCallRequest``, ``toolCallResult``; a
        plain string is accepted as text), a string (one user message) or a :class:`Chat`
        (copied). Several text parts of one message are joined with a blank line."""
        if isinstance(history, Chat):
            return history.copy()
        if isinstance(history, str):
            return cls().add_user(history)
        messages = history.get("messages") if isinstance(history, Mapping) else None
        if not isinstance(messages, list):
            raise LMStudioValueError(
                "expected a Chat, a string or a history dict with a 'messages' list, "
                f"got {type(history).__name__}"
            )
        chat = cls()
        chat._messages = [_message_from_wire(i, m) for i, m in enumerate(messages)]
        return chat

    def to_history(self) -> dict[str, Any]:
        """The history in the official SDKs' shape (``ChatHistoryData``), which
        :meth:`from_history` (ours or ``lmstudio.Chat.from_history``) reads back."""
        return {"messages": [m.to_wire() for m in self._messages]}

    def to_wire(self) -> dict[str, Any]:
        """The wire ``ChatHistoryData`` (same as :meth:`to_history`)."""
        return self.to_history()

    @property
    def images(self) -> tuple[FileHandle, ...]:
        """Every image attached to a message of this chat."""
        return tuple(i for m in self._messages for i in m.images)


ChatInput: TypeAlias = "str | Chat | Sequence[ChatMessage | Mapping[str, Any]] | Mapping[str, Any]"
"""What ``respond`` takes: a user message, a :class:`Chat`, a list of messages, or a history
dict ``{"messages": [...]}``."""


def coerce_chat(value: object) -> Chat:
    """A :class:`Chat` from a string, a :class:`Chat`, a history dict or a sequence of
    messages / dicts.

    Raises :class:`~lmstudio_async.LMStudioValueError` for anything else and for an
    empty history.
    """
    if isinstance(value, str):
        return Chat().add_user(value)
    if isinstance(value, Chat):
        chat = value
    elif isinstance(value, Mapping):
        chat = Chat.from_history(value)
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        chat = Chat()
        for index, item in enumerate(value):
            if isinstance(item, ChatMessage):
                chat._messages.append(item)
            elif isinstance(item, Mapping):
                if set(item) != {"role", "content"}:
                    raise LMStudioValueError(
                        f"chat message {index} must have exactly the keys 'role' and "
                        f"'content', got {sorted(map(str, item))}"
                    )
                if isinstance(item["content"], str):
                    chat.add(item["role"], item["content"])
                else:
                    chat._messages.append(_message_from_wire(index, item))
            else:
                raise LMStudioValueError(
                    f"chat message {index} must be a ChatMessage or a dict with 'role' and "
                    f"'content', got {type(item).__name__}"
                )
    else:
        raise LMStudioValueError(
            "expected a prompt string, a Chat, or a list of {'role', 'content'} messages, "
            f"got {type(value).__name__}"
        )
    if not chat._messages:
        raise LMStudioValueError("the chat history is empty: add at least one message")
    return chat
