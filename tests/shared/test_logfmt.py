"""The one log format: every record is one logfmt line (ts, level, logger, then the event or msg)."""

from __future__ import annotations

import logging
import re
import sys

import pytest

from revisit.shared.logfmt import LogfmtFormatter, event

_PAIR = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ "=]+)(?: |$)')


def parse(line: str) -> dict[str, str]:
    """A logfmt line as a dict; AssertionError unless the whole line is pairs."""
    pairs, pos = {}, 0
    while pos < len(line):
        m = _PAIR.match(line, pos)
        assert m, f"not logfmt at {pos}: {line!r}"
        value = m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", lambda c: {"n": "\n", "t": "\t"}.get(c.group(1), c.group(1)), value[1:-1])
        pairs[m.group(1)] = value
        pos = m.end()
    return pairs


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (0.5, "0.5"),
        (1 / 3, "0.333333"),
        (True, "true"),
        ("a b", "a b"),
        ('say "hi"', 'say "hi"'),
        ("two\nlines", "two\nlines"),
        ("back\\slash", "back\\slash"),
        ("", ""),
        ("k=v", "k=v"),
    ],
)
def test_event_values_round_trip(value, text):
    assert parse(event("x", value=value, gone=None)) == {"event": "x", "value": text}


def _record(msg: object, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("revisit.test", logging.WARNING, __file__, 1, msg, args or None, exc_info)


def test_formatter_heads_every_line_and_quotes_free_text():
    fmt = LogfmtFormatter()
    line = fmt.format(_record(event("spool_full", dropped=3)))
    fields = parse(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields.pop("ts"))
    assert fields == {"level": "warning", "logger": "revisit.test", "event": "spool_full", "dropped": "3"}
    free = parse(fmt.format(_record('store failed on %s: "%s"', "batch", "gone away")))
    assert free["msg"] == 'store failed on batch: "gone away"'
    crashed = parse(fmt.format(_record("it broke", exc=True)))
    assert crashed["msg"] == "it broke" and "ValueError: boom" in crashed["exc"] and "Traceback" in crashed["exc"]
