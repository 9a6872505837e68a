"""The one log format of every `revisit` process (edge daemon, central service, CLI): one line per record in
logfmt (`key=value`, values quoted when needed).

Modules may log `log.info(event("spool_full", dropped=3, depth=100))`; `LogfmtFormatter` prefixes time, level and
logger and renders free-text messages (ours and other libraries') as `msg="..."`, so every line parses as logfmt.
"""

from __future__ import annotations

import logging
import time


class Event(str):
    """A message already in logfmt (made by `event`)."""


def _value(value: object) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if text and not any(c in text for c in ' ="\\\n\t') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def event(name: str, /, **fields: object) -> Event:
    """`name key=value ...`; None values are left out."""
    parts = [f"event={_value(name)}"]
    parts += [f"{k}={_value(v)}" for k, v in fields.items() if v is not None]
    return Event(" ".join(parts))


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        head = f"ts={stamp} level={record.levelname.lower()} logger={record.name}"
        body = record.msg if isinstance(record.msg, Event) and not record.args else f"msg={_value(record.getMessage())}"
        line = f"{head} {body}"
        if record.exc_info:
            line += f" exc={_value(self.formatException(record.exc_info))}"
        return line


def install(level: int = logging.INFO) -> None:
    """Log to stderr in logfmt at `level`. Like `logging.basicConfig`, it leaves a root logger that already has
    handlers (a test runner's, an embedding program's) as it is."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()  # stderr
    handler.setFormatter(LogfmtFormatter())
    root.addHandler(handler)
    root.setLevel(level)
