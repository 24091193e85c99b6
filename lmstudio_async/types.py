"""Deadlines: the exported defaults and the :class:`Timeouts` value object."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Final, TypeAlias

from .config import suggest_field
from .errors import LMStudioValueError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_KEEPALIVE_INTERVAL",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_TIMEOUTS",
    "TimeoutArg",
    "Timeouts",
    "resolve_timeouts",
]

DEFAULT_IDLE_TIMEOUT: Final = 60.0
"""Seconds a call may wait for the next message from the server (reply or progress)."""

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
"""Seconds to open a socket and authenticate (and to probe for LM Studio)."""

DEFAULT_KEEPALIVE_INTERVAL: Final = 10.0
"""Seconds of silence on an open socket after which the client sends ``keepAlive``."""

DEFAULT_KEEPALIVE_TIMEOUT: Final = 25.0
"""Seconds of silence after which an open socket is declared dead (even with no call waiting)."""


def _check(name: str, value: float | None, *, allow_none: bool = True) -> None:
    if value is None:
        if not allow_none:
            raise LMStudioValueError(f"Timeouts.{name} must be a number of seconds, not None")
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LMStudioValueError(
            f"Timeouts.{name} must be a number of seconds or None, got {type(value).__name__}"
        )
    if not math.isfinite(value) or value <= 0:
        raise LMStudioValueError(
            f"Timeouts.{name} must be a positive number of seconds, got {value!r}"
        )


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines of a client or of one call, in seconds; ``None`` disables one.

    - ``idle``: longest wait for the *next* message of a call. A load that keeps
      reporting progress never hits it, however long it takes.
    - ``total``: optional cap on a whole call, progress or not.
    - ``connect``: opening a socket, authenticating, probing for LM Studio; in a call's
      ``timeout=``, how long that call waits for its socket to open.
    - ``keepalive_interval`` / ``keepalive_timeout``: liveness of idle sockets;
      after ``keepalive_interval`` seconds without a frame the client sends
      ``keepAlive``, and after ``keepalive_timeout`` seconds without one it drops
      the socket (in-flight calls fail; the next call reconnects). Sockets are shared
      by all of a client's calls, so these two are the client's: in a call's
      ``timeout=`` they have no effect.
    """

    idle: float | None = DEFAULT_IDLE_TIMEOUT
    total: float | None = None
    connect: float = DEFAULT_CONNECT_TIMEOUT
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT

    def __post_init__(self) -> None:
        _check("idle", self.idle)
        _check("total", self.total)
        _check("connect", self.connect, allow_none=False)
        _check("keepalive_interval", self.keepalive_interval, allow_none=False)
        _check("keepalive_timeout", self.keepalive_timeout, allow_none=False)
        if self.keepalive_timeout <= self.keepalive_interval:
            raise LMStudioValueError(
                "Timeouts.keepalive_timeout must be longer than keepalive_interval "
                f"({self.keepalive_timeout!r} <= {self.keepalive_interval!r})"
            )

    def with_(self, **changes: float | None) -> Timeouts:
        """A copy with some deadlines replaced (an unknown name is an
        :class:`LMStudioValueError` that suggests the closest field)."""
        names = [field.name for field in fields(self)]
        for name in changes:
            if name not in names:
                raise LMStudioValueError(
                    f"Timeouts has no field {name!r}{suggest_field(name, names)}; "
                    f"the fields are {', '.join(names)}"
                )
        return replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_TIMEOUTS: Final = Timeouts()
"""The client-wide default: 60 s idle, no total cap, 10 s connect."""

TimeoutArg: TypeAlias = "float | Timeouts | None"
"""What ``timeout=`` accepts: seconds (the idle deadline), a :class:`Timeouts`, or ``None``
(no idle deadline; connect and keepalive deadlines stay). A number or ``None`` changes only
the idle deadline of the client's; a :class:`Timeouts` is taken whole (fields left out have
their defaults: derive it with ``client.timeouts.with_(...)`` to keep the client's)."""


def resolve_timeouts(value: float | Timeouts | None, base: Timeouts) -> Timeouts:
    """Turn a ``timeout=`` argument into a :class:`Timeouts`, starting from ``base``."""
    if isinstance(value, Timeouts):
        return value
    if value is None:
        return replace(base, idle=None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LMStudioValueError(
            f"timeout must be seconds (a number), a Timeouts object or None, "
            f"got {type(value).__name__}"
        )
    return replace(base, idle=float(value))
