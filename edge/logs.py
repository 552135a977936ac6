"""Logging setup: human text on a terminal, one JSON object per line for journald/collectors."""

from __future__ import annotations

import collections
import json
import logging
import sys
import time
from dataclasses import dataclass


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Entry:
    at: float
    level: str
    logger: str
    message: str


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class RecentLogs(logging.Handler):
    """The last ``capacity`` log entries in memory, for the console's logs page (the journal
    keeps everything; this is what a technician looks at first)."""

    def __init__(self, capacity: int = 2000, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._entries: collections.deque[Entry] = collections.deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the entry
            message = str(record.msg)
        self._entries.append(Entry(record.created, record.levelname, record.name, message))

    def entries(self, *, level: str = "INFO", text: str = "", limit: int = 200) -> list[Entry]:
        """Newest first: entries at ``level`` or above whose logger or message contains
        ``text`` (case-insensitive)."""
        floor = LEVELS.index(level) if level in LEVELS else 1
        wanted = text.lower()
        found: list[Entry] = []
        for entry in reversed(self._entries):
            rank = LEVELS.index(entry.level) if entry.level in LEVELS else len(LEVELS)
            if rank < floor:
                continue
            if wanted and wanted not in entry.message.lower() and wanted not in entry.logger:
                continue
            found.append(entry)
            if len(found) >= limit:
                break
        return found


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # paho logs every packet at DEBUG; keep it quiet unless asked for explicitly.
    logging.getLogger("mqtt").setLevel(max(logging.INFO, root.level))
