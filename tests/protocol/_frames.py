"""Test-local WebSocket codecs, written independently of ``lmstudio_async._protocol.websocket``
so that its tests never check the module's output with the module itself. Used by
``protocol/test_websocket.py`` and ``client/test_websocket_io.py``."""

from __future__ import annotations


def naive_mask(data: bytes, mask: bytes) -> bytes:
    """RFC 6455 §5.3, byte by byte."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def server_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    length_bytes: int | None = None,
    mask: bytes | None = None,
) -> bytes:
    """One frame as a server writes it: unmasked unless ``mask`` is given, with the
    shortest length encoding unless ``length_bytes`` (0, 2 or 8) forces one."""
    n = len(payload)
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 0x10000 else 8
    b0 = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length_bytes == 0:
        head = bytes((b0, mask_bit | n))
    elif length_bytes == 2:
        head = bytes((b0, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, mask_bit | 127)) + n.to_bytes(8, "big")
    if mask is not None:
        return head + mask + naive_mask(payload, mask)
    return head + payload
