"""What a logger writes, formatted as the JSON lines production logs are (llmpulse.logs.JsonFormatter)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

from llmpulse.logs import JsonFormatter


@contextlib.contextmanager
def json_lines(logger_name: str, level: int) -> Iterator[io.StringIO]:
    """The lines ``logger_name`` writes at ``level`` and above while the block runs; the logger is left as it was."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    level_before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level_before)
