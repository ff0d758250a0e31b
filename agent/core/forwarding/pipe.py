"""The forwarding sidecar's pipes: length-prefixed pickled messages, one writer at a time.

Each message is a tuple whose first element names it (see ``agent.core.forwarding.sidecar``
for the parent's side and ``agent.core.forwarding.child`` for the child's). A frame is a 4-byte
big-endian length and the pickle (protocol 5). Only our own processes are at either end: the
pipes are anonymous, created by the parent for the child it starts, and never named anywhere.
"""

from __future__ import annotations

import contextlib
import pickle
import select
import struct
import threading
import time
from typing import IO, Any

__all__ = ["EOF", "MAX_FRAME", "Reader", "Writer"]

_HEADER = struct.Struct("!I")
# A frame larger than this is a bug or corruption, not a message: the reader stops there.
MAX_FRAME = 256 * 1024 * 1024

EOF = object()  # what ``Reader.read`` returns once the other side has closed the pipe


class Writer:
    """Writes whole frames to a binary stream; thread-safe (one frame at a time).

    A write without a deadline blocks while the pipe is full (the forwarder's intake worker: the
    back-pressure it passes on to its own bounded queue). A control message (a flush, a
    shutdown) has a deadline: it gives up with ``TimeoutError`` before writing a byte when the
    pipe is still busy or full by then, so flush and shutdown stay bounded even when the other
    side has stopped reading.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...], *, deadline: float | None = None) -> int:
        """Write one message; returns its size in bytes. Raises ``OSError`` (a broken pipe),
        ``TimeoutError`` (see the class docstring) and whatever pickling raises."""
        data = pickle.dumps(message, protocol=5)
        self.send_bytes(data, deadline=deadline)
        return len(data)

    def send_bytes(self, data: bytes, *, deadline: float | None = None) -> None:
        if deadline is None:
            with self._lock:
                self._write(data)
            return
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError("the pipe is busy")
        try:
            # A control message is far smaller than the room a writable pipe has (PIPE_BUF).
            _, writable, _ = select.select(
                [], [self._stream.fileno()], [], max(0.0, deadline - time.monotonic())
            )
            if not writable:
                raise TimeoutError("the pipe is full")
            self._write(data)
        finally:
            self._lock.release()

    def _write(self, data: bytes) -> None:
        self._stream.write(_HEADER.pack(len(data)))
        self._stream.write(data)
        self._stream.flush()

    def close(self, timeout: float = 0.1) -> bool:
        """Close the stream (the other side reads EOF); False when a write still holds it (the
        other side has stopped reading: the caller ends it another way)."""
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            # The other side may be gone already: nothing left to tell it.
            with contextlib.suppress(OSError):
                self._stream.close()
            return True
        finally:
            self._lock.release()


class Reader:
    """Reads whole frames from a binary stream (one reader thread)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def read(self) -> Any:
        """The next message, or ``EOF`` when the pipe is closed (or the frame is cut short)."""
        header = self._exactly(_HEADER.size)
        if header is None:
            return EOF
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME:
            return EOF
        data = self._exactly(size)
        return EOF if data is None else pickle.loads(data)

    def _exactly(self, n: int) -> bytes | None:
        chunks = []
        while n:
            chunk = self._stream.read(n)
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)
