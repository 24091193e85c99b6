"""The stand-in LM Studio server in a child process (so its CPU never shares our GIL)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType

_READY = re.compile(r"LM Studio stand-in listening on https?://(\S+)")


class StandInProcess:
    """``python -m lmstudio_async.testing --port 0 --load-seconds 0`` as a child process."""

    def __init__(
        self, load_seconds: float = 0.0, timeout: float = 20.0, extra_args: Sequence[str] = ()
    ) -> None:
        self.load_seconds = load_seconds
        self.timeout = timeout
        self.extra_args = list(extra_args)
        self.host = ""
        self.proc: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None

    def start(self) -> str:
        """Start the server; returns ``host:port`` once it prints its ready line."""
        cmd = [
            sys.executable,
            "-m",
            "lmstudio_async.testing",
            "--port",
            "0",
            "--load-seconds",
            str(self.load_seconds),
            *self.extra_args,
        ]
        self.proc = proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            match = _READY.search(line)
            if match:
                self.host = match[1].rstrip("/")
                # Keep draining its output so the child never blocks on a full pipe.
                self._drain = threading.Thread(
                    target=_drain, args=(proc.stdout,), name="standin-drain", daemon=True
                )
                self._drain.start()
                return self.host
        self.stop()
        raise RuntimeError("the stand-in server did not start:\n" + "".join(seen))

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> StandInProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _drain(stream: object) -> None:
    try:
        for _ in stream:  # type: ignore[attr-defined]
            pass
    except (OSError, ValueError):
        pass
