"""The forwarding sidecar's pipes: length-prefixed pickled messages, one writer at a time.

Each message is a tuple whose first element names it (see ``agent.core.forwarding.sidecar``
for the parent's side and ``agent.core.forwarding.child`` for the child's). A frame is a 4-byte
big-endian length and the pickle (protocol 5). Only our own processes are at either end: the
pipes are anonymous, created by the parent for the child it starts, and never named anywhere.
"""

from __future__ import annotations

import contextlib
import pickle
import struct
import threading
from typing import IO, Any

__all__ = ["EOF", "MAX_FRAME", "Reader", "Writer"]

_HEADER = struct.Struct("!I")
# A frame larger than this is a bug or corruption, not a message: the reader stops there.
MAX_FRAME = 256 * 1024 * 1024

EOF = object()  # what ``Reader.read`` returns once the other side has closed the pipe


class Writer:
    """Writes whole frames to a binary stream; thread-safe (one frame at a time)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> int:
        """Write one message; returns its size in bytes. Raises ``OSError`` (a broken pipe) and
        whatever pickling raises."""
        data = pickle.dumps(message, protocol=5)
        self.send_bytes(data)
        return len(data)

    def send_bytes(self, data: bytes) -> None:
        with self._lock:
            self._stream.write(_HEADER.pack(len(data)))
            self._stream.write(data)
            self._stream.flush()

    def close(self) -> None:
        # The other side may be gone already: nothing left to tell it.
        with self._lock, contextlib.suppress(OSError):
            self._stream.close()


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
