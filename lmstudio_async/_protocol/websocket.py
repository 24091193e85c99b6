"""Sans-I/O WebSocket client framing (RFC 6455), just what an LM Studio socket needs.

* :class:`Handshake` builds the HTTP upgrade request and checks the server's answer.
* :class:`FrameParser` turns received bytes, cut anywhere, into whole messages and
  control frames, and rejects what a server may not send (masked frames,
  reserved bits or opcodes, bad fragmentation, oversized control frames).
* :func:`encode_frame` builds one masked client frame.

No extension is ever offered, so compressed frames are a protocol error.
Nothing here touches a socket: the I/O layer feeds bytes in and writes the
bytes it gets back.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
from typing import Final

__all__ = [
    "BINARY",
    "CLOSE",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_BIG",
    "PING",
    "PONG",
    "TEXT",
    "FrameError",
    "FrameParser",
    "Handshake",
    "HandshakeError",
    "accept_key",
    "apply_mask",
    "close_payload",
    "encode_frame",
    "parse_close",
]

CONTINUATION: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA

CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_TOO_BIG: Final = 1009

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_RESPONSE_HEAD: Final = 64 * 1024


class FrameError(Exception):
    """The peer broke the framing rules; close the socket with :attr:`code`."""

    def __init__(self, detail: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(detail)
        self.code = code


class HandshakeError(Exception):
    """The server did not accept the upgrade; :attr:`status` is its HTTP status, if any."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.status = status


# --- opening handshake -----------------------------------------------------------


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode()


class Handshake:
    """The client side of the opening handshake of one connection."""

    __slots__ = ("_head", "key", "request")

    def __init__(self, host: str, path: str, *, user_agent: str | None = None) -> None:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        for name, value, banned in (
            ("host", host, " \t\r\n\0"),
            ("path", path, " \t\r\n\0"),
            ("user_agent", user_agent or "", "\r\n\0"),
        ):
            if any(c in value for c in banned):
                raise ValueError(f"{name} contains whitespace or control characters: {value!r}")
        self.key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.key}",
            "Sec-WebSocket-Version: 13",
        ]
        if user_agent:
            lines.append(f"User-Agent: {user_agent}")
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._head = bytearray()

    def receive(self, data: bytes) -> bytes | None:
        """Feed response bytes: ``None`` while the head is incomplete, then the bytes
        that followed it (the first frames). Raises :class:`HandshakeError`."""
        head = self._head
        start = max(len(head) - 3, 0)
        head += data
        end = head.find(b"\r\n\r\n", start)
        if end < 0:
            if len(head) > _MAX_RESPONSE_HEAD:
                raise HandshakeError(f"the response head is longer than {_MAX_RESPONSE_HEAD} bytes")
            return None
        if end + 4 > _MAX_RESPONSE_HEAD:
            raise HandshakeError(f"the response head is longer than {_MAX_RESPONSE_HEAD} bytes")
        rest = bytes(head[end + 4 :])
        self._check(bytes(head[:end]).decode("latin-1"))
        return rest

    def _check(self, text: str) -> None:
        status_line, *header_lines = text.split("\r\n")
        parts = status_line.split(" ", 2)
        if (
            len(parts) < 2
            or not parts[0].startswith("HTTP/")
            or not (parts[1].isascii() and parts[1].isdigit())
        ):
            raise HandshakeError(f"the answer is not HTTP: {status_line[:80]!r}")
        status = int(parts[1])
        if status != 101:
            raise HandshakeError(f"the upgrade was answered with HTTP {status}", status)
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise HandshakeError(f"malformed header line {line[:80]!r}", status)
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if headers.get("upgrade", "").lower() != "websocket":
            raise HandshakeError("the 101 answer does not upgrade to 'websocket'", status)
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        if "upgrade" not in tokens:
            raise HandshakeError("the 101 answer lacks 'Connection: Upgrade'", status)
        if headers.get("sec-websocket-accept") != accept_key(self.key):
            raise HandshakeError("the 101 answer has a wrong Sec-WebSocket-Accept", status)
        if headers.get("sec-websocket-extensions"):
            raise HandshakeError(
                "the server chose an extension the client did not offer: "
                f"{headers['sec-websocket-extensions'][:80]!r}",
                status,
            )


# --- frames ----------------------------------------------------------------------


def apply_mask(data: bytes, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (its own inverse)."""
    n = len(data)
    if not n:
        return b""
    key = (mask * ((n + 3) >> 2))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


# Masks need not be cryptographically strong here: masking protects HTTP caches from
# frames crafted by untrusted code in a browser, and this client runs no such code.
# A seeded PRNG costs ~0.2 µs a frame instead of ~0.9 µs for os.urandom (as aiohttp does).
_mask_bits = random.Random(os.urandom(16)).getrandbits


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final client frame of ``opcode`` carrying ``payload``, masked with ``mask``
    (4 bytes; a fresh random one when omitted, as RFC 6455 asks of clients)."""
    if mask is None:
        mask = _mask_bits(32).to_bytes(4, "little")
    elif len(mask) != 4:
        raise ValueError(f"a mask has 4 bytes, got {len(mask)}")
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 0x10000:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    if not n:
        return head + mask
    # apply_mask inlined (this runs once per call): XOR as one big integer, whole words.
    words = (n + 3) >> 2
    key = int.from_bytes(mask * words, "little")
    masked = (int.from_bytes(payload, "little") ^ key).to_bytes(words * 4, "little")
    return head + mask + masked[:n]


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame: the status code, then the UTF-8 reason."""
    data = code.to_bytes(2, "big") + reason.encode()
    if len(data) > 125:
        raise ValueError("a close reason may take at most 123 bytes")
    return data


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """(code, reason) of a received close frame; ``None`` when it carries no code."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise FrameError("a close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not (1000 <= code <= 4999) or code in (1004, 1005, 1006, 1015) or 1016 <= code < 3000:
        raise FrameError(f"close code {code} may not be sent")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError("a close reason that is not UTF-8", 1007) from None
    return code, reason


class FrameParser:
    """Reassembles the frames a server sends into messages.

    :meth:`feed` returns ``(opcode, payload)`` pairs in arrival order: whole
    ``TEXT``/``BINARY`` messages (fragments joined) and ``PING``/``PONG``/``CLOSE``
    control frames. A message larger than ``max_message`` bytes (0: no limit)
    raises :class:`FrameError` with code 1009. Payloads are always ``bytes``.
    """

    __slots__ = ("_buf", "_frag_op", "_frag_size", "_frags", "_need", "max_message")

    def __init__(self, max_message: int = 0) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._need = 0  # bytes the buffered frame needs before it can be parsed further
        self._frags: list[bytes] = []
        self._frag_op = 0
        self._frag_size = 0

    @property
    def buffered(self) -> int:
        """Bytes held back: an incomplete frame, plus fragments of an unfinished message."""
        return len(self._buf) + self._frag_size

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        view: bytes | bytearray
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            view = buf
        else:
            view = data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(view)
        need = 0
        while pos < end:
            if end - pos < 2:
                need = 2
                break
            b0 = view[pos]
            b1 = view[pos + 1]
            if b1 & 0x80:
                raise FrameError("the server sent a masked frame")
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    need = 4
                    break
                n = int.from_bytes(view[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if end - pos < 10:
                    need = 10
                    break
                n = int.from_bytes(view[pos + 2 : pos + 10], "big")
                if n >> 63:
                    raise FrameError("a frame length with its top bit set")
                head = 10
            stop = pos + head + n
            if stop > end:
                if b0 & 0x08 and n > 125:  # a control frame: refuse it before buffering it
                    raise FrameError(f"a control frame of {n} bytes (at most 125)")
                need = head + n
                # Reject a too-big message early, but only where the whole frame would
                # fail the same way: a valid data frame that starts or continues one.
                op = b0 & 0x7F
                if (
                    self.max_message
                    and self._frag_size + n > self.max_message
                    and (op in (TEXT, BINARY) if not self._frag_op else op == CONTINUATION)
                ):
                    raise FrameError(
                        f"a frame of {n} bytes exceeds the {self.max_message}-byte limit",
                        CLOSE_TOO_BIG,
                    )
                break
            payload = bytes(view[pos + head : stop])
            pos = stop
            if b0 == 0x81 or b0 == 0x82:  # a whole text/binary message: the common case
                if self._frag_op:
                    raise FrameError("a new message began inside a fragmented one")
                self._check_size(n)
                out.append((b0 & 0x0F, payload))
            else:
                self._frame(b0, payload, out)
        if pos >= end:
            if buf:
                buf.clear()
            self._need = 0
        else:
            if buf:
                del buf[:pos]
            else:
                buf += view[pos:]
            self._need = need
        return out

    def _check_size(self, n: int) -> None:
        if self.max_message and n > self.max_message:
            raise FrameError(
                f"a message of {n} bytes exceeds the {self.max_message}-byte limit",
                CLOSE_TOO_BIG,
            )

    def _frame(self, b0: int, payload: bytes, out: list[tuple[int, bytes]]) -> None:
        if b0 & 0x70:
            raise FrameError("a frame with reserved bits set (no extension was negotiated)")
        fin = b0 & 0x80
        opcode = b0 & 0x0F
        if opcode >= 0x8:
            if opcode not in (CLOSE, PING, PONG):
                raise FrameError(f"a frame with reserved control opcode {opcode:#x}")
            if not fin:
                raise FrameError("a fragmented control frame")
            if len(payload) > 125:
                raise FrameError(f"a control frame of {len(payload)} bytes (at most 125)")
            out.append((opcode, payload))
        elif opcode == CONTINUATION:
            if not self._frag_op:
                raise FrameError("a continuation frame outside a fragmented message")
            self._frag_size += len(payload)
            self._check_size(self._frag_size)
            self._frags.append(payload)
            if fin:
                out.append((self._frag_op, b"".join(self._frags)))
                self._frags = []
                self._frag_op = 0
                self._frag_size = 0
        elif opcode in (TEXT, BINARY):
            if self._frag_op:
                raise FrameError("a new message began inside a fragmented one")
            # fin is clear here: a whole message took the fast path in feed()
            self._check_size(len(payload))
            self._frag_op = opcode
            self._frags = [payload]
            self._frag_size = len(payload)
        else:
            raise FrameError(f"a frame with reserved data opcode {opcode:#x}")
