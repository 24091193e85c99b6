"""The sans-I/O WebSocket framing (RFC 6455), without sockets: handshake, frames, close
codes, and byte streams cut anywhere.

Frames a server sends are built here by a small encoder of our own, and the client frames
the module builds are read back by a small decoder of our own, so neither side of a test
trusts the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmstudio_async._protocol.websocket import (
    BINARY,
    CLOSE,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    FrameError,
    FrameParser,
    Handshake,
    HandshakeError,
    accept_key,
    apply_mask,
    close_payload,
    encode_frame,
    parse_close,
)

from ._frames import naive_mask, server_frame

RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10

# --------------------------------------------------------------------------- test-local codecs


@dataclass(frozen=True)
class ClientFrame:
    fin: bool
    rsv: int
    opcode: int
    length_field: int  # the 7-bit length in the second byte: n, 126 or 127
    mask: bytes
    payload: bytes


def decode_client_frame(data: bytes) -> ClientFrame:
    """Read back exactly one masked frame; fail if ``data`` holds anything else."""
    b0, b1 = data[0], data[1]
    assert b1 & 0x80, "a client frame must have its mask bit set"
    field = b1 & 0x7F
    if field == 126:
        n, pos = int.from_bytes(data[2:4], "big"), 4
    elif field == 127:
        n, pos = int.from_bytes(data[2:10], "big"), 10
    else:
        n, pos = field, 2
    mask = data[pos : pos + 4]
    pos += 4
    assert len(mask) == 4
    assert len(data) == pos + n, "the frame length does not match the bytes"
    return ClientFrame(
        fin=bool(b0 & 0x80),
        rsv=b0 & 0x70,
        opcode=b0 & 0x0F,
        length_field=field,
        mask=mask,
        payload=naive_mask(data[pos:], mask),
    )


def feed_chunks(
    parser: FrameParser, data: bytes, cuts: Iterable[int] = ()
) -> list[tuple[int, bytes]]:
    """Feed ``data`` cut at ``cuts``; return everything the parser produced."""
    out: list[tuple[int, bytes]] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out += parser.feed(data[start:cut])
        start = cut
    return out


def feed_bytewise(parser: FrameParser, data: bytes) -> list[tuple[int, bytes]]:
    return feed_chunks(parser, data, range(1, len(data)))


def assert_all_bytes(items: Sequence[tuple[int, bytes]]) -> None:
    for opcode, payload in items:
        assert type(opcode) is int
        assert type(payload) is bytes, type(payload)


# --------------------------------------------------------------------------- RFC 6455 examples


def test_rfc_single_frame_unmasked_text() -> None:
    # RFC 6455 §5.7: "A single-frame unmasked text message"
    assert FrameParser().feed(bytes.fromhex("810548656c6c6f")) == [(TEXT, b"Hello")]


def test_rfc_single_frame_masked_text_is_what_encode_frame_builds() -> None:
    # RFC 6455 §5.7: "A single-frame masked text message"
    expected = bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(TEXT, b"Hello", mask=bytes.fromhex("37fa213d")) == expected


def test_rfc_fragmented_unmasked_text() -> None:
    parser = FrameParser()
    assert parser.feed(bytes.fromhex("010348656c")) == []
    assert parser.buffered == 3
    assert parser.feed(bytes.fromhex("80026c6f")) == [(TEXT, b"Hello")]
    assert parser.buffered == 0


def test_rfc_ping_and_pong() -> None:
    parser = FrameParser()
    assert parser.feed(bytes.fromhex("890548656c6c6f")) == [(PING, b"Hello")]
    assert parser.feed(bytes.fromhex("8a0548656c6c6f")) == [(PONG, b"Hello")]


def test_rfc_256_byte_and_64k_binary() -> None:
    small = bytes(range(256))
    big = bytes(range(256)) * 256
    data = bytes.fromhex("827e0100") + small + bytes.fromhex("827f0000000000010000") + big
    assert FrameParser().feed(data) == [(BINARY, small), (BINARY, big)]


def test_accept_key_rfc_example() -> None:
    # RFC 6455 §1.3 (the value printed in the RFC, computed by hand just below)
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    digest = hashlib.sha1(b"dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == base64.b64encode(digest.digest()).decode()


def test_constants() -> None:
    assert (CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG) == (0, 1, 2, 8, 9, 10)
    assert (CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG) == (1000, 1002, 1009)


# --------------------------------------------------------------------------- apply_mask


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.binary(min_size=4, max_size=4))
def test_apply_mask_matches_naive_xor_and_is_an_involution(data: bytes, mask: bytes) -> None:
    masked = apply_mask(data, mask)
    assert type(masked) is bytes
    assert masked == naive_mask(data, mask)
    assert apply_mask(masked, mask) == data


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 7, 8, 9, 125, 126, 1000, 65536, 65537])
def test_apply_mask_lengths_around_the_mask_period(n: int) -> None:
    data = random.Random(n).randbytes(n)
    mask = b"\x01\x80\xff\x7e"
    masked = apply_mask(data, mask)
    assert len(masked) == n
    assert masked == naive_mask(data, mask)
    # leading zero bytes and trailing 0xff survive the integer arithmetic
    edge = b"\x00" * n
    assert apply_mask(edge, mask) == (mask * n)[:n]
    assert apply_mask(apply_mask(edge, mask), mask) == edge


def test_apply_mask_edges() -> None:
    assert apply_mask(b"", b"abcd") == b""
    assert type(apply_mask(b"", b"abcd")) is bytes
    assert apply_mask(b"hello", b"\0\0\0\0") == b"hello"
    assert apply_mask(b"\x00\x00\x00\x00\x00", b"\xff\xfe\xfd\xfc") == b"\xff\xfe\xfd\xfc\xff"


# --------------------------------------------------------------------------- encode_frame

_BOUNDARY_SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537]
_SIZES = st.one_of(st.integers(0, 300), st.sampled_from(_BOUNDARY_SIZES))
_SEEDS = st.integers(0, 2**32 - 1)
_TO_TEXT = bytes(0x20 + b % 95 for b in range(256))  # printable ASCII, so valid UTF-8


def make_payload(n: int, seed: int, text: bool = False) -> bytes:
    data = random.Random(seed).randbytes(n)
    return data.translate(_TO_TEXT) if text else data


def expected_length_field(n: int) -> int:
    return n if n < 126 else 126 if n < 0x10000 else 127


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    opcode=st.sampled_from([TEXT, BINARY, CLOSE, PING, PONG]),
    n=_SIZES,
    seed=_SEEDS,
    mask=st.none() | st.binary(min_size=4, max_size=4),
)
def test_encode_frame_decodes_back(opcode: int, n: int, seed: int, mask: bytes | None) -> None:
    payload = make_payload(n, seed)
    data = encode_frame(opcode, payload, mask)
    assert type(data) is bytes
    frame = decode_client_frame(data)
    assert frame.fin
    assert frame.rsv == 0
    assert frame.opcode == opcode
    assert frame.length_field == expected_length_field(n)
    assert frame.payload == payload
    if mask is not None:
        assert frame.mask == mask


@pytest.mark.parametrize(
    ("n", "head"),
    [
        (0, "8180"),
        (125, "81fd"),
        (126, "81fe007e"),
        (65535, "81feffff"),
        (65536, "81ff0000000000010000"),
        (65537, "81ff0000000000010001"),
    ],
)
def test_encode_frame_length_encodings(n: int, head: str) -> None:
    data = encode_frame(TEXT, b"a" * n, mask=b"\0\0\0\0")
    assert data == bytes.fromhex(head) + b"\0\0\0\0" + b"a" * n


def test_encode_frame_draws_a_fresh_mask_each_time() -> None:
    masks = {decode_client_frame(encode_frame(TEXT, b"same")).mask for _ in range(8)}
    assert len(masks) > 1  # 8 equal random 32-bit masks: odds of 2**-224


def test_encode_frame_accepts_bytearray_payload() -> None:
    data = encode_frame(BINARY, bytearray(b"xyz"), mask=b"abcd")  # type: ignore[arg-type]
    assert type(data) is bytes
    assert decode_client_frame(data).payload == b"xyz"


@pytest.mark.parametrize("mask", [b"", b"abc", b"abcde"])
def test_encode_frame_rejects_a_mask_of_the_wrong_size(mask: bytes) -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        encode_frame(TEXT, b"x", mask)


# --------------------------------------------------------------------------- streams cut anywhere


@dataclass(frozen=True)
class FrameInfo:
    end: int  # stream offset just past this frame
    held: int  # payload bytes of an unfinished message the parser holds after this frame
    emits: tuple[int, bytes] | None


@dataclass(frozen=True)
class Wire:
    """A server's byte stream and, frame by frame, what a parser must make of it."""

    data: bytes
    frames: tuple[FrameInfo, ...]
    expected: tuple[tuple[int, bytes], ...]
    sizes: tuple[int | None, ...]  # per expected item: the message size, None for control

    def state_at(self, pos: int) -> tuple[list[tuple[int, bytes]], int]:
        """(items emitted, bytes buffered) once the first ``pos`` bytes were fed."""
        emitted: list[tuple[int, bytes]] = []
        last_end = held = 0
        for frame in self.frames:
            if frame.end > pos:
                break
            if frame.emits is not None:
                emitted.append(frame.emits)
            last_end, held = frame.end, frame.held
        return emitted, held + pos - last_end


Control = tuple[int, bytes]
Message = tuple[int, bytes, list[bytes], list[list[Control]]]


@st.composite
def controls(draw: st.DrawFn) -> Control:
    opcode = draw(st.sampled_from([PING, PONG, CLOSE]))
    n = draw(st.integers(0, 125) | st.sampled_from([0, 125]))
    return opcode, make_payload(n, draw(_SEEDS))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    n = draw(_SIZES)
    payload = make_payload(n, draw(_SEEDS), text=opcode == TEXT)
    pieces = draw(st.integers(1, 4))
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=pieces - 1, max_size=pieces - 1)))
    parts = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    between = [draw(st.lists(controls(), max_size=2)) for _ in parts[1:]]
    return opcode, payload, parts, between


def build_wire(items: Sequence[Control | Message]) -> Wire:
    data = bytearray()
    frames: list[FrameInfo] = []
    expected: list[tuple[int, bytes]] = []
    sizes: list[int | None] = []

    def add(frame: bytes, held: int, emits: tuple[int, bytes] | None) -> None:
        data.extend(frame)
        frames.append(FrameInfo(len(data), held, emits))
        if emits is not None:
            expected.append(emits)
            sizes.append(len(emits[1]) if emits[0] in (TEXT, BINARY) else None)

    for item in items:
        if len(item) == 2:
            opcode, payload = item
            add(server_frame(opcode, payload), 0, (opcode, payload))
            continue
        opcode, payload, parts, between = item
        held = 0
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            held = 0 if last else held + len(part)
            add(
                server_frame(opcode if i == 0 else CONTINUATION, part, fin=last),
                held,
                (opcode, payload) if last else None,
            )
            if not last:
                for ctl_op, ctl_payload in between[i]:
                    add(server_frame(ctl_op, ctl_payload), held, (ctl_op, ctl_payload))
    return Wire(bytes(data), tuple(frames), tuple(expected), tuple(sizes))


@st.composite
def chunked_wires(draw: st.DrawFn) -> tuple[Wire, list[int]]:
    """A stream of messages and control frames, and offsets to cut it at."""
    wire = build_wire(draw(st.lists(controls() | messages(), min_size=1, max_size=5)))
    total = len(wire.data)
    rng = random.Random(draw(_SEEDS))
    how = draw(st.sampled_from(["whole", "bytewise", "random", "headers"]))
    cuts: list[int] = []
    if how == "bytewise":
        if total <= 4096:
            cuts = list(range(1, total))
        else:  # mostly tiny chunks, now and then a big one
            pos = 0
            while pos < total:
                pos += rng.choice([1, 1, 1, 2, 3, 5, 11, 200, 4000, 70000])
                cuts.append(min(pos, total))
    elif how == "random":
        cuts = draw(st.lists(st.integers(0, total), max_size=40))
    elif how == "headers":  # cut inside every frame head (2, 4 or 10 bytes) and just after it
        starts = [0, *(f.end for f in wire.frames[:-1])]
        cuts = [s + rng.choice([1, 2, 3, 4, 5, 9, 10, 11]) for s in starts]
        cuts = [c for c in cuts if c < total]
    return wire, cuts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunked_wires())
def test_stream_cut_anywhere_yields_exactly_the_messages(case: tuple[Wire, list[int]]) -> None:
    wire, cuts = case
    parser = FrameParser()
    got: list[tuple[int, bytes]] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(wire.data)]:
        got += parser.feed(wire.data[start:cut])
        start = cut
        # Nothing is emitted late or early, and exactly the unparsed bytes plus the
        # fragments of an unfinished message are held back.
        emitted, buffered = wire.state_at(cut)
        assert got == emitted
        assert parser.buffered == buffered
    assert got == list(wire.expected)
    assert_all_bytes(got)
    assert parser.buffered == 0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunked_wires())
def test_max_message_limit_is_exact_and_independent_of_chunking(
    case: tuple[Wire, list[int]],
) -> None:
    wire, cuts = case
    largest = max((s for s in wire.sizes if s is not None), default=0)
    # A limit equal to the largest message changes nothing, even for larger control frames.
    assert feed_chunks(FrameParser(max_message=max(largest, 1)), wire.data, cuts) == list(
        wire.expected
    )
    if largest < 2:
        return
    # One byte less: the first largest message fails with 1009, whatever the cuts, and
    # what came out before it is an exact prefix of what precedes that message.
    parser = FrameParser(max_message=largest - 1)
    got: list[tuple[int, bytes]] = []
    start = 0
    with pytest.raises(FrameError) as info:  # noqa: PT012 - the loop is the code under test
        for cut in [*sorted(set(cuts)), len(wire.data)]:
            got += parser.feed(wire.data[start:cut])
            start = cut
    assert info.value.code == CLOSE_TOO_BIG
    assert got == list(wire.expected[: len(got)])
    assert len(got) <= wire.sizes.index(largest)


def test_every_two_way_split_of_a_mixed_stream() -> None:
    wire = build_wire(
        [
            (TEXT, b"", [b""], []),
            (BINARY, b"x" * 126, [b"x" * 126], []),
            (PING, b"p" * 125),
            (TEXT, b"abcdefgh", [b"ab", b"", b"cdefgh"], [[(PONG, b"")], [(CLOSE, b"\x03\xe8")]]),
            (BINARY, b"z" * 300, [b"z" * 299, b"z"], [[]]),
        ]
    )
    for cut in range(len(wire.data) + 1):
        parser = FrameParser()
        first = parser.feed(wire.data[:cut])
        emitted, buffered = wire.state_at(cut)
        assert first == emitted
        assert parser.buffered == buffered
        got = first + parser.feed(wire.data[cut:])
        assert got == list(wire.expected)
        assert_all_bytes(got)
        assert parser.buffered == 0


def test_controls_interleaved_between_fragments_come_out_first() -> None:
    data = (
        server_frame(TEXT, b"he", fin=False)
        + server_frame(PING, b"1")
        + server_frame(CONTINUATION, b"ll", fin=False)
        + server_frame(PONG, b"2")
        + server_frame(CLOSE, close_payload(1000, "bye"))
        + server_frame(CONTINUATION, b"o", fin=True)
        + server_frame(BINARY, b"\x00")
    )
    expected = [
        (PING, b"1"),
        (PONG, b"2"),
        (CLOSE, b"\x03\xe8bye"),
        (TEXT, b"hello"),
        (BINARY, b"\x00"),
    ]
    assert FrameParser().feed(data) == expected
    assert feed_bytewise(FrameParser(), data) == expected


def test_fragmented_binary_with_empty_fragments() -> None:
    data = (
        server_frame(BINARY, b"", fin=False)
        + server_frame(CONTINUATION, b"", fin=False)
        + server_frame(CONTINUATION, b"", fin=True)
    )
    got = FrameParser().feed(data)
    assert got == [(BINARY, b"")]
    assert_all_bytes(got)


def test_a_single_fragment_message_is_joined_to_bytes() -> None:
    parser = FrameParser()
    got = parser.feed(server_frame(TEXT, b"abc", fin=False) + server_frame(CONTINUATION, b""))
    assert got == [(TEXT, b"abc")]
    assert_all_bytes(got)


@pytest.mark.parametrize("length_bytes", [2, 8])
def test_longer_length_encodings_than_needed_are_read(length_bytes: int) -> None:
    # RFC 6455 asks senders for the shortest encoding; reading a longer one is harmless.
    data = server_frame(TEXT, b"hi", length_bytes=length_bytes)
    assert FrameParser().feed(data) == [(TEXT, b"hi")]
    assert feed_bytewise(FrameParser(), data) == [(TEXT, b"hi")]


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_payloads_are_bytes_whatever_is_fed(kind: type) -> None:
    data = (
        server_frame(TEXT, b"one")
        + server_frame(BINARY, b"tw", fin=False)
        + server_frame(PING, b"!")
        + server_frame(CONTINUATION, b"o")
        + server_frame(BINARY, b"three")
    )
    expected = [(TEXT, b"one"), (PING, b"!"), (BINARY, b"two"), (BINARY, b"three")]
    parser = FrameParser()
    got = parser.feed(kind(data))
    assert got == expected
    assert_all_bytes(got)
    # and through the internal buffer, a few bytes at a time
    parser = FrameParser()
    got = []
    for i in range(0, len(data), 3):
        got += parser.feed(kind(data[i : i + 3]))
    assert got == expected
    assert_all_bytes(got)


def test_parser_copies_what_it_keeps() -> None:
    """Callers may reuse their receive buffer: nothing returned or held aliases it."""
    frame = server_frame(BINARY, b"abcdef")
    chunk = bytearray(frame[:5])
    parser = FrameParser()
    assert parser.feed(chunk) == []  # type: ignore[arg-type]
    chunk[:] = b"\xff" * len(chunk)
    whole = bytearray(frame)
    got = parser.feed(frame[5:]) + parser.feed(whole)  # type: ignore[arg-type]
    whole[:] = b"\x00" * len(whole)
    assert got == [(BINARY, b"abcdef"), (BINARY, b"abcdef")]


def test_feeding_nothing() -> None:
    parser = FrameParser()
    assert parser.feed(b"") == []
    assert parser.buffered == 0
    assert parser.feed(b"\x81") == []
    assert parser.feed(b"") == []
    assert parser.buffered == 1
    assert parser.feed(b"\x00") == [(TEXT, b"")]


# --------------------------------------------------------------------------- buffered


def test_buffered_counts_an_incomplete_head_and_payload() -> None:
    parser = FrameParser()
    frame = server_frame(BINARY, b"x" * 300)  # 4-byte head
    for i in range(1, len(frame)):
        assert parser.feed(frame[i - 1 : i]) == []
        assert parser.buffered == i
    assert parser.feed(frame[-1:]) == [(BINARY, b"x" * 300)]
    assert parser.buffered == 0


def test_buffered_counts_fragments_of_an_unfinished_message() -> None:
    parser = FrameParser()
    assert parser.feed(server_frame(TEXT, b"abcd", fin=False)) == []
    assert parser.buffered == 4
    assert parser.feed(server_frame(PING, b"ping")) == [(PING, b"ping")]
    assert parser.buffered == 4
    assert parser.feed(server_frame(CONTINUATION, b"ef", fin=False) + b"\x80") == []
    assert parser.buffered == 4 + 2 + 1
    assert parser.feed(b"\x01") == []
    assert parser.buffered == 4 + 2 + 2
    assert parser.feed(b"g") == [(TEXT, b"abcdefg")]
    assert parser.buffered == 0


def test_buffered_after_complete_frames_plus_a_partial_one() -> None:
    parser = FrameParser()
    data = server_frame(TEXT, b"a") + server_frame(TEXT, b"bc")
    assert parser.feed(data[:-1]) == [(TEXT, b"a")]
    assert parser.buffered == 3
    assert parser.feed(data[-1:]) == [(TEXT, b"bc")]
    assert parser.buffered == 0


# --------------------------------------------------------------------------- frame errors


def _fragment_start(opcode: int = TEXT) -> bytes:
    return server_frame(opcode, b"start", fin=False)


_P = CLOSE_PROTOCOL_ERROR
_FRAME_ERRORS = [
    pytest.param(server_frame(TEXT, b"hi", mask=b"abcd"), 0, _P, id="masked-text"),
    pytest.param(server_frame(PING, b"", mask=b"\0\0\0\0"), 0, _P, id="masked-empty-ping"),
    pytest.param(encode_frame(BINARY, b"x" * 200), 0, _P, id="masked-client-frame"),
    pytest.param(server_frame(TEXT, b"x", rsv=RSV1), 0, _P, id="rsv1-text"),
    pytest.param(server_frame(TEXT, b"x", rsv=RSV2), 0, _P, id="rsv2-text"),
    pytest.param(server_frame(BINARY, b"x", rsv=RSV3), 0, _P, id="rsv3-binary"),
    pytest.param(server_frame(TEXT, b"x", fin=False, rsv=RSV1), 0, _P, id="rsv1-fragment-start"),
    pytest.param(server_frame(PING, b"x", rsv=RSV1), 0, _P, id="rsv1-ping"),
    pytest.param(server_frame(CLOSE, b"", rsv=RSV2 | RSV3), 0, _P, id="rsv-close"),
    pytest.param(
        _fragment_start() + server_frame(CONTINUATION, b"x", rsv=RSV1),
        0,
        _P,
        id="rsv1-continuation",
    ),
    *(
        pytest.param(server_frame(op, b"x"), 0, _P, id=f"reserved-opcode-{op:#x}")
        for op in (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)
    ),
    pytest.param(server_frame(0x3, b"x", fin=False), 0, _P, id="reserved-data-opcode-unfinished"),
    pytest.param(server_frame(CONTINUATION, b"x"), 0, _P, id="continuation-without-start"),
    pytest.param(
        server_frame(CONTINUATION, b"x", fin=False),
        0,
        _P,
        id="unfinished-continuation-without-start",
    ),
    pytest.param(
        _fragment_start() + server_frame(CONTINUATION, b"end") + server_frame(CONTINUATION, b"x"),
        0,
        _P,
        id="continuation-after-the-message-ended",
    ),
    pytest.param(
        _fragment_start() + server_frame(TEXT, b"new"), 0, _P, id="text-inside-fragmented"
    ),
    pytest.param(
        _fragment_start(BINARY) + server_frame(BINARY, b"new"), 0, _P, id="binary-inside-fragmented"
    ),
    pytest.param(
        _fragment_start() + server_frame(BINARY, b"new", fin=False),
        0,
        _P,
        id="unfinished-message-inside-fragmented",
    ),
    pytest.param(
        _fragment_start() + server_frame(PING, b"") + server_frame(TEXT, b"new"),
        0,
        _P,
        id="new-message-after-interleaved-ping",
    ),
    pytest.param(server_frame(PING, b"x", fin=False), 0, _P, id="fragmented-ping"),
    pytest.param(server_frame(PONG, b"", fin=False), 0, _P, id="fragmented-pong"),
    pytest.param(server_frame(CLOSE, b"\x03\xe8", fin=False), 0, _P, id="fragmented-close"),
    pytest.param(server_frame(PING, b"x" * 126), 0, _P, id="ping-126-bytes"),
    pytest.param(server_frame(CLOSE, b"\x03\xe8" + b"x" * 124), 0, _P, id="close-126-bytes"),
    pytest.param(server_frame(PONG, b"x" * 200, length_bytes=8), 0, _P, id="pong-64-bit-length"),
    pytest.param(
        server_frame(PING, b"x" * 126, length_bytes=2), 10, _P, id="long-ping-under-limit"
    ),
    pytest.param(bytes((0x82, 127)) + (1 << 63).to_bytes(8, "big"), 0, _P, id="length-top-bit"),
    pytest.param(bytes((0x82, 127)) + b"\xff" * 8, 0, _P, id="length-all-ones"),
    pytest.param(bytes((0x82, 127)) + b"\xff" * 8, 10, _P, id="length-top-bit-with-limit"),
    pytest.param(server_frame(TEXT, b"x" * 11), 10, CLOSE_TOO_BIG, id="message-over-limit"),
    pytest.param(server_frame(BINARY, b"x" * 70000), 65536, CLOSE_TOO_BIG, id="64k-over-limit"),
    pytest.param(
        server_frame(TEXT, b"x" * 6, fin=False) + server_frame(CONTINUATION, b"x" * 5),
        10,
        CLOSE_TOO_BIG,
        id="fragments-over-limit",
    ),
    pytest.param(
        server_frame(TEXT, b"x" * 6, fin=False) + server_frame(CONTINUATION, b"x" * 5, fin=False),
        10,
        CLOSE_TOO_BIG,
        id="unfinished-fragments-over-limit",
    ),
    pytest.param(
        server_frame(TEXT, b"x" * 11, fin=False), 10, CLOSE_TOO_BIG, id="first-fragment-over-limit"
    ),
    pytest.param(
        server_frame(BINARY, b"x" * 1000)[:10], 10, CLOSE_TOO_BIG, id="announced-length-over-limit"
    ),
    pytest.param(
        bytes((0x82, 127)) + (1 << 40).to_bytes(8, "big"), 10, CLOSE_TOO_BIG, id="announced-1tb"
    ),
    pytest.param(
        server_frame(TEXT, b"x" * 6, fin=False) + server_frame(CONTINUATION, b"x" * 5)[:3],
        10,
        CLOSE_TOO_BIG,
        id="announced-continuation-over-limit",
    ),
]


@pytest.mark.parametrize(("data", "max_message", "code"), _FRAME_ERRORS)
def test_frame_error_in_one_piece(data: bytes, max_message: int, code: int) -> None:
    with pytest.raises(FrameError) as info:
        FrameParser(max_message).feed(data)
    assert info.value.code == code


@pytest.mark.parametrize(("data", "max_message", "code"), _FRAME_ERRORS)
def test_frame_error_byte_by_byte(data: bytes, max_message: int, code: int) -> None:
    parser = FrameParser(max_message)
    with pytest.raises(FrameError) as info:
        feed_bytewise(parser, data)
    assert info.value.code == code


def test_frame_error_after_good_frames_in_the_same_chunk() -> None:
    with pytest.raises(FrameError) as info:
        FrameParser().feed(server_frame(TEXT, b"ok") + server_frame(TEXT, b"bad", rsv=RSV1))
    assert info.value.code == CLOSE_PROTOCOL_ERROR
    assert "reserved bits" in str(info.value)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_a_huge_control_frame_is_refused_from_its_header(opcode: int) -> None:
    # Without a message limit, a control frame announcing 1 GB must not be buffered
    # until its bytes arrive: it can never be valid, so its header is enough.
    parser = FrameParser()
    head = bytes((0x80 | opcode, 127)) + (10**9).to_bytes(8, "big")
    with pytest.raises(FrameError, match="control frame") as info:
        parser.feed(head + b"x" * 10)
    assert info.value.code == CLOSE_PROTOCOL_ERROR


def test_frame_error_defaults() -> None:
    assert FrameError("x").code == CLOSE_PROTOCOL_ERROR
    assert FrameError("x", 1007).code == 1007
    assert str(FrameError("detail")) == "detail"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(server_frame(TEXT, b"x" * 10), id="text"),
        pytest.param(server_frame(BINARY, b"x" * 10, length_bytes=8), id="binary-64-bit-length"),
        pytest.param(
            server_frame(TEXT, b"x" * 4, fin=False)
            + server_frame(PING, b"")
            + server_frame(CONTINUATION, b"x" * 6),
            id="fragments",
        ),
    ],
)
def test_message_exactly_at_the_limit_passes(data: bytes) -> None:
    message = (data[0] & 0x0F, b"x" * 10)
    assert FrameParser(max_message=10).feed(data)[-1] == message
    assert feed_bytewise(FrameParser(max_message=10), data)[-1] == message


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_control_frames_are_not_held_to_the_message_limit(opcode: int) -> None:
    """A 125-byte control frame is legal whatever ``max_message`` is, and cut or not."""
    data = server_frame(opcode, b"c" * 125)
    assert FrameParser(max_message=10).feed(data) == [(opcode, b"c" * 125)]
    assert feed_bytewise(FrameParser(max_message=10), data) == [(opcode, b"c" * 125)]
    parser = FrameParser(max_message=10)
    assert parser.feed(server_frame(TEXT, b"12345", fin=False) + data[:50]) == []
    assert parser.feed(data[50:] + server_frame(CONTINUATION, b"67890")) == [
        (opcode, b"c" * 125),
        (TEXT, b"1234567890"),
    ]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(server_frame(TEXT, b"x" * 50, rsv=RSV1), id="reserved-bits"),
        pytest.param(server_frame(0x3, b"x" * 50), id="reserved-opcode"),
        pytest.param(server_frame(CONTINUATION, b"x" * 50), id="continuation-without-start"),
        pytest.param(_fragment_start() + server_frame(TEXT, b"x" * 50), id="new-inside-fragmented"),
        pytest.param(server_frame(PING, b"x" * 126), id="long-control"),
    ],
)
def test_the_error_code_does_not_depend_on_where_the_bytes_are_cut(data: bytes) -> None:
    """A frame that breaks a framing rule and is also too big is a protocol error (1002),
    as it is when it arrives whole, not a 1009 raised while its payload is awaited."""
    for cut in range(len(data)):
        parser = FrameParser(max_message=10)
        with pytest.raises(FrameError) as info:
            feed_chunks(parser, data, [cut])
        assert info.value.code == CLOSE_PROTOCOL_ERROR, cut


# --------------------------------------------------------------------------- close frames


def test_close_payload_bytes() -> None:
    assert close_payload(1000) == b"\x03\xe8"
    assert close_payload(CLOSE_TOO_BIG, "too big") == b"\x03\xf1too big"
    assert close_payload(4999, "é") == b"\x13\x87\xc3\xa9"
    assert type(close_payload(1000)) is bytes


def test_close_reason_length_limit_is_in_bytes() -> None:
    assert len(close_payload(1000, "x" * 123)) == 125
    assert len(close_payload(1000, "é" * 61 + "x")) == 125
    with pytest.raises(ValueError, match="123 bytes"):
        close_payload(1000, "x" * 124)
    with pytest.raises(ValueError, match="123 bytes"):
        close_payload(1000, "é" * 62)


def test_parse_close_without_payload() -> None:
    assert parse_close(b"") == (None, "")


def test_parse_close_one_byte_payload() -> None:
    with pytest.raises(FrameError) as info:
        parse_close(b"\x03")
    assert info.value.code == CLOSE_PROTOCOL_ERROR


@pytest.mark.parametrize(
    "code", [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
)
def test_parse_close_rejects_codes_that_may_not_be_sent(code: int) -> None:
    with pytest.raises(FrameError) as info:
        parse_close(code.to_bytes(2, "big") + b"reason")
    assert info.value.code == CLOSE_PROTOCOL_ERROR
    assert str(code) in str(info.value)


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
)
def test_parse_close_accepts_codes_that_may_be_sent(code: int) -> None:
    assert parse_close(code.to_bytes(2, "big")) == (code, "")
    assert parse_close(close_payload(code, "ciao ✓")) == (code, "ciao ✓")


@pytest.mark.parametrize(
    "reason",
    [b"\xff", b"\xc3", b"ok\x80", b"\xed\xa0\x80", b"\xc0\xaf"],
    ids=["ff", "truncated", "stray-continuation", "surrogate", "overlong"],
)
def test_parse_close_rejects_a_reason_that_is_not_utf8(reason: bytes) -> None:
    with pytest.raises(FrameError) as info:
        parse_close(b"\x03\xe8" + reason)
    assert info.value.code == 1007


@settings(max_examples=100, deadline=None)
@given(
    code=st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011])
    | st.integers(3000, 4999),
    reason=st.text(max_size=40).filter(lambda r: len(r.encode()) <= 123),
)
def test_close_payload_round_trip(code: int, reason: str) -> None:
    payload = close_payload(code, reason)
    assert len(payload) <= 125
    parsed = parse_close(payload)
    assert parsed == (code, reason)
    assert type(parsed[1]) is str
    # and through a frame parser, as a control frame
    assert FrameParser().feed(server_frame(CLOSE, payload)) == [(CLOSE, payload)]


# --------------------------------------------------------------------------- handshake


def parse_request(data: bytes) -> tuple[str, dict[str, str]]:
    assert data.endswith(b"\r\n\r\n")
    text = data[:-4].decode("ascii")
    assert "\r\n\r\n" not in text
    assert "\n" not in text.replace("\r\n", "")
    assert "\r" not in text.replace("\r\n", "")
    request_line, *lines = text.split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(": ")
        assert sep, line
        assert name.lower() not in headers, f"{name} sent twice"
        headers[name.lower()] = value
    return request_line, headers


def response_head(
    status_line: str = "HTTP/1.1 101 Switching Protocols", headers: Sequence[str] = ()
) -> bytes:
    return "\r\n".join([status_line, *headers, "", ""]).encode("latin-1")


def good_headers(hs: Handshake) -> list[str]:
    return [
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(hs.key)}",
    ]


def good_response(hs: Handshake) -> bytes:
    return response_head(headers=good_headers(hs))


def test_request_has_the_required_headers() -> None:
    hs = Handshake("localhost:1234", "/llm?x=1")
    request_line, headers = parse_request(hs.request)
    assert request_line == "GET /llm?x=1 HTTP/1.1"
    assert headers["host"] == "localhost:1234"
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in {t.strip().lower() for t in headers["connection"].split(",")}
    assert headers["sec-websocket-version"] == "13"
    key = headers["sec-websocket-key"]
    assert key == hs.key
    assert len(base64.b64decode(key, validate=True)) == 16
    assert "user-agent" not in headers
    assert "sec-websocket-extensions" not in headers
    assert type(hs.request) is bytes


def test_request_with_user_agent() -> None:
    hs = Handshake("127.0.0.1", "/", user_agent="lmstudio-async/0.1 (python; test)")
    _, headers = parse_request(hs.request)
    assert headers["user-agent"] == "lmstudio-async/0.1 (python; test)"


def test_each_handshake_draws_a_fresh_key() -> None:
    keys = {Handshake("h", "/").key for _ in range(8)}
    assert len(keys) == 8


@pytest.mark.parametrize(
    ("host", "path", "user_agent", "match"),
    [
        ("local host", "/", None, "host"),
        ("a\tb", "/", None, "host"),
        ("a\r\nX-Evil: 1", "/", None, "host"),
        ("a\nb", "/", None, "host"),
        ("a\rb", "/", None, "host"),
        ("a\0b", "/", None, "host"),
        ("h", "/a b", None, "path"),
        ("h", "/a\r\nX-Evil: 1", None, "path"),
        ("h", "/\n", None, "path"),
        ("h", "/\r", None, "path"),
        ("h", "/a\tb", None, "path"),
        ("h", "no-slash", None, "path must start"),
        ("h", "", None, "path must start"),
        ("h", "http://h/", None, "path must start"),
        ("h", " /", None, "path must start"),
        ("h", "/", "ua\r\nX-Evil: 1", "user_agent"),
        ("h", "/", "ua\nx", "user_agent"),
    ],
)
def test_handshake_rejects_values_that_would_break_the_request(
    host: str, path: str, user_agent: str | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Handshake(host, path, user_agent=user_agent)


def test_response_in_one_piece() -> None:
    hs = Handshake("h", "/")
    rest = hs.receive(good_response(hs))
    assert rest == b""
    assert type(rest) is bytes


def test_response_followed_by_frames_returns_them() -> None:
    hs = Handshake("h", "/")
    frames = server_frame(TEXT, b"hello") + server_frame(PING, b"p")[:1]
    rest = hs.receive(good_response(hs) + frames)
    assert rest == frames
    assert type(rest) is bytes
    parser = FrameParser()
    assert parser.feed(rest) == [(TEXT, b"hello")]
    assert parser.buffered == 1


def test_response_split_at_every_offset() -> None:
    extra = server_frame(TEXT, b"first")
    probe = Handshake("h", "/")
    size = len(good_response(probe))
    for cut in range(1, size + len(extra)):
        hs = Handshake("h", "/")
        data = good_response(hs) + extra
        first = hs.receive(data[:cut])
        if cut < size:
            assert first is None, cut
            assert hs.receive(data[cut:]) == extra
        else:
            assert first == extra[: cut - size]


def test_response_one_byte_at_a_time() -> None:
    hs = Handshake("h", "/")
    data = good_response(hs)
    for i in range(len(data) - 1):
        assert hs.receive(data[i : i + 1]) is None
    assert hs.receive(data[-1:]) == b""


def test_response_with_the_blank_line_split_in_every_way() -> None:
    """The CRLFCRLF may arrive as CR | LF CR LF, CR LF | CR LF, CR LF CR | LF, in any
    number of pieces."""
    for pieces in ([1, 1, 1, 1], [1, 3], [2, 2], [3, 1], [1, 2, 1], [2, 1, 1]):
        hs = Handshake("h", "/")
        data = good_response(hs)
        body, tail = data[:-4], data[-4:]
        assert hs.receive(body) is None
        pos = 0
        for i, n in enumerate(pieces):
            result = hs.receive(tail[pos : pos + n])
            pos += n
            assert result == (b"" if i == len(pieces) - 1 else None), pieces


def test_response_headers_are_case_insensitive() -> None:
    hs = Handshake("h", "/")
    data = response_head(
        "HTTP/1.1 101 switching protocols",
        [
            "UPGRADE: WebSocket",
            "connection:upgrade",
            f"sec-websocket-ACCEPT:   {accept_key(hs.key)}  ",
            "X-Other: whatever: with colons",
        ],
    )
    assert hs.receive(data) == b""


@pytest.mark.parametrize(
    "connection",
    ["keep-alive, Upgrade", "Upgrade, keep-alive", "keep-alive,upgrade", " UPGRADE "],
)
def test_connection_header_with_several_tokens(connection: str) -> None:
    hs = Handshake("h", "/")
    headers = [
        "Upgrade: websocket",
        f"Connection: {connection}",
        f"Sec-WebSocket-Accept: {accept_key(hs.key)}",
    ]
    assert hs.receive(response_head(headers=headers)) == b""


def test_connection_header_repeated() -> None:
    hs = Handshake("h", "/")
    headers = [*_without(hs, "Connection"), "Connection: keep-alive", "Connection: Upgrade"]
    assert hs.receive(response_head(headers=headers)) == b""


def test_response_without_reason_phrase_and_with_extra_headers() -> None:
    hs = Handshake("h", "/")
    headers = [*good_headers(hs), "Server: stand-in", "Sec-WebSocket-Extensions:", "Date: x"]
    assert hs.receive(response_head("HTTP/1.1 101", headers)) == b""


@pytest.mark.parametrize("status", [100, 200, 204, 301, 400, 401, 403, 404, 426, 500, 503])
def test_non_101_answer(status: int) -> None:
    hs = Handshake("h", "/")
    data = response_head(f"HTTP/1.1 {status} Whatever It Says", ["Content-Length: 0"])
    with pytest.raises(HandshakeError) as info:
        hs.receive(data)
    assert info.value.status == status
    assert str(status) in str(info.value)


def test_non_101_answer_even_with_upgrade_headers() -> None:
    hs = Handshake("h", "/")
    with pytest.raises(HandshakeError) as info:
        hs.receive(response_head("HTTP/1.1 200 OK", good_headers(hs)))
    assert info.value.status == 200


def _without(hs: Handshake, prefix: str) -> list[str]:
    return [h for h in good_headers(hs) if not h.startswith(prefix)]


@pytest.mark.parametrize(
    ("make_headers", "match"),
    [
        pytest.param(lambda hs: _without(hs, "Upgrade"), "upgrade", id="no-upgrade"),
        pytest.param(
            lambda hs: [*_without(hs, "Upgrade"), "Upgrade: h2c"], "upgrade", id="upgrade-h2c"
        ),
        pytest.param(
            lambda hs: [*_without(hs, "Upgrade"), "Upgrade: websocket, h2c"],
            "upgrade",
            id="upgrade-list",
        ),
        pytest.param(lambda hs: _without(hs, "Connection"), "Connection", id="no-connection"),
        pytest.param(
            lambda hs: [*_without(hs, "Connection"), "Connection: keep-alive"],
            "Connection",
            id="connection-keep-alive",
        ),
        pytest.param(
            lambda hs: [*_without(hs, "Connection"), "Connection: upgrades"],
            "Connection",
            id="connection-near-miss",
        ),
        pytest.param(lambda hs: _without(hs, "Sec-WebSocket-Accept"), "Accept", id="no-accept"),
        pytest.param(
            lambda hs: [*_without(hs, "Sec-WebSocket-Accept"), "Sec-WebSocket-Accept: "],
            "Accept",
            id="empty-accept",
        ),
        pytest.param(
            lambda hs: [*_without(hs, "Sec-WebSocket-Accept"), f"Sec-WebSocket-Accept: {hs.key}"],
            "Accept",
            id="accept-echoes-key",
        ),
        pytest.param(
            lambda hs: [
                *_without(hs, "Sec-WebSocket-Accept"),
                "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            ],
            "Accept",
            id="accept-for-another-key",
        ),
        pytest.param(
            lambda hs: [
                *_without(hs, "Sec-WebSocket-Accept"),
                f"Sec-WebSocket-Accept: {accept_key(hs.key).lower()}",
            ],
            "Accept",
            id="accept-wrong-case",
        ),
        pytest.param(
            lambda hs: [*good_headers(hs), f"Sec-WebSocket-Accept: {accept_key(hs.key)}"],
            "Accept",
            id="accept-twice",
        ),
        pytest.param(
            lambda hs: [*good_headers(hs), "Sec-WebSocket-Extensions: permessage-deflate"],
            "extension",
            id="unoffered-extension",
        ),
        pytest.param(
            lambda hs: [*good_headers(hs), "sec-websocket-extensions: x-webkit-deflate-frame"],
            "extension",
            id="unoffered-extension-lowercase",
        ),
        pytest.param(
            lambda hs: [*good_headers(hs), "this line has no colon"],
            "malformed",
            id="malformed-header-line",
        ),
    ],
)
def test_bad_101_answer(make_headers: object, match: str) -> None:
    hs = Handshake("h", "/")
    assert callable(make_headers)
    data = response_head(headers=make_headers(hs))
    with pytest.raises(HandshakeError, match=match) as info:
        hs.receive(data)
    assert info.value.status == 101


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", id="ssh"),
        pytest.param(b"<html><body>hi</body></html>\r\n\r\n", id="html"),
        pytest.param(b"\r\n\r\n", id="empty"),
        pytest.param(b"HTTP/1.1\r\n\r\n", id="no-status"),
        pytest.param(b"HTTP/1.1 abc OK\r\n\r\n", id="status-not-a-number"),
        pytest.param(b"HTTP/1.1 -101 OK\r\n\r\n", id="negative-status"),
        pytest.param(b"HTTP/1.1  101 OK\r\n\r\n", id="two-spaces"),
        pytest.param(b"HTTP/1.1 \xb9\xb2\xb3 OK\r\n\r\n", id="latin1-superscript-digits"),
        pytest.param(b"HTTP/1.1 1\xb901 OK\r\n\r\n", id="superscript-inside"),
        pytest.param(b"http/1.1 101 Switching Protocols\r\n\r\n", id="lowercase-http"),
        pytest.param(b"\x00\x01\x02\x03\r\n\r\n", id="binary"),
        pytest.param(bytes(range(128, 256)) + b"\r\n\r\n", id="high-bytes"),
    ],
)
def test_answer_that_is_not_http(data: bytes) -> None:
    with pytest.raises(HandshakeError, match="not HTTP") as info:
        Handshake("h", "/").receive(data)
    assert info.value.status is None


def test_overlong_head_without_end_is_refused_while_arriving() -> None:
    hs = Handshake("h", "/")
    chunk = b"X-Padding: " + b"a" * 989 + b"\r\n"
    assert hs.receive(b"HTTP/1.1 101 Switching Protocols\r\n") is None
    with pytest.raises(HandshakeError, match="longer than") as info:  # noqa: PT012
        for _ in range(100):
            assert hs.receive(chunk) is None
    assert info.value.status is None
    assert len(chunk) * 66 > 64 * 1024  # it gave up after about 64 KiB, not 100 KB


def _padded_response(hs: Handshake, total: int) -> bytes:
    """A valid 101 answer whose head, blank line included, is exactly ``total`` bytes."""
    base = response_head(headers=[*good_headers(hs), "X-Padding: "])
    pad = total - len(base)
    assert pad >= 0
    return response_head(headers=[*good_headers(hs), "X-Padding: " + "p" * pad])


@pytest.mark.parametrize("chunk", [None, 1, 4096])
def test_head_size_limit_is_64k_however_it_arrives(chunk: int | None) -> None:
    limit = 64 * 1024
    hs = Handshake("h", "/")
    data = _padded_response(hs, limit)
    assert len(data) == limit
    step = chunk or len(data)
    results = [hs.receive(data[i : i + step]) for i in range(0, len(data), step)]
    assert results[-1] == b""
    assert all(r is None for r in results[:-1])

    hs = Handshake("h", "/")
    data = _padded_response(hs, limit + 1)
    assert len(data) == limit + 1
    with pytest.raises(HandshakeError, match="longer than") as info:  # noqa: PT012
        for i in range(0, len(data), step):
            hs.receive(data[i : i + step])
    assert info.value.status is None


def test_handshake_error_defaults() -> None:
    assert HandshakeError("x").status is None
    assert HandshakeError("x", 404).status == 404
    assert str(HandshakeError("detail", 500)) == "detail"


# --------------------------------------------------------------------------- end to end


def test_handshake_then_frames_then_close() -> None:
    hs = Handshake("localhost:1234", "/llm")
    stream = (
        good_response(hs)
        + server_frame(TEXT, b'{"type":"ok"}')
        + server_frame(PING, b"keepalive")
        + server_frame(CLOSE, close_payload(CLOSE_NORMAL, "bye"))
    )
    rest = None
    pos = 0
    while rest is None:
        rest = hs.receive(stream[pos : pos + 7])
        pos += 7
    parser = FrameParser(max_message=1 << 20)
    got = parser.feed(rest) + feed_chunks(parser, stream[pos:], range(1, len(stream) - pos, 5))
    assert got == [
        (TEXT, b'{"type":"ok"}'),
        (PING, b"keepalive"),
        (CLOSE, b"\x03\xe8bye"),
    ]
    assert parse_close(got[-1][1]) == (CLOSE_NORMAL, "bye")
    # the client's answers are masked frames a server can read back
    pong = decode_client_frame(encode_frame(PONG, got[1][1]))
    assert (pong.opcode, pong.payload) == (PONG, b"keepalive")
