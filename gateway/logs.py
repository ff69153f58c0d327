"""Logging set-up for `tiergate serve`: plain lines for operators, batched JSON lines for access.

The access log writes one JSON line per request. Writing and flushing each line is a system call
per request (~50 us here, more than the gateway's whole overhead budget), so access lines are
buffered and written together: when 256 are waiting, or every 250 ms by a background thread,
and at exit.

`configure` returns the function the gateway writes access lines to; the app factory hands it to
`create_app`, so no module keeps a handler of its own.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from collections.abc import Callable
from typing import TextIO

ACCESS_LOGGER = "tiergate.access"


class BatchedStreamHandler(logging.Handler):
    def __init__(self, stream: TextIO, *, max_lines: int = 256, interval_s: float = 0.25) -> None:
        super().__init__()
        self.stream = stream
        self.max_lines = max_lines
        # A lock of our own for the line buffer: the hot path and the flushing thread both touch it.
        self._lines_lock = threading.Lock()
        self._lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval_s,), name="access-log", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write_line(line)

    def write_line(self, line: str) -> None:
        """Queue one finished line; the hot path calls this directly, skipping LogRecord."""
        with self._lines_lock:
            self._lines.append(line)
            full = len(self._lines) >= self.max_lines
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lines_lock:
            if not self._lines:
                return
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # the stream is gone (shutdown); nothing sensible to do with the lines

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()


def logger_sink() -> Callable[[str], None] | None:
    """Access lines for an app whose logging is not ours to configure (tests, embedding apps):
    the `tiergate.access` logger when it is enabled for INFO, else nowhere."""
    access = logging.getLogger(ACCESS_LOGGER)
    if access.disabled or not access.isEnabledFor(logging.INFO):
        return None
    return access.info


def configure(level: str, *, access_log: bool = True, stream: TextIO | None = None) -> Callable[[str], None] | None:
    """Set up a worker's logging; returns where access lines go (None when the access log is off)."""
    out = stream or sys.stderr
    root = logging.getLogger()
    root.setLevel(level.upper())
    plain = logging.StreamHandler(out)
    plain.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.handlers[:] = [plain]
    access = logging.getLogger(ACCESS_LOGGER)
    for old in access.handlers:
        old.close()
    access.propagate = False
    access.disabled = not access_log
    batched = BatchedStreamHandler(out)
    # The message is already a JSON object with its own fields; a prefix would make it unparsable.
    batched.setFormatter(logging.Formatter("%(message)s"))
    access.handlers[:] = [batched]
    # The hot path writes finished lines to the handler directly, skipping LogRecord.
    return batched.write_line if access_log else None
