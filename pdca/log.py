"""The library's loggers: structlog over the standard ``logging`` logger ``pdca``.

The library never prints. Its events go to ``logging.getLogger("pdca")`` through structlog's
configured processors, so a host system decides where they go (and sees nothing below
WARNING unless it asks), and the CLI turns them into console or JSON lines on stderr.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

_stdlib = logging.getLogger("pdca")


def get_logger(**initial: Any) -> Any:
    """A structlog logger writing through the ``pdca`` stdlib logger."""
    return structlog.wrap_logger(_stdlib, **initial)


def enabled(level: int = logging.INFO) -> bool:
    """Cheap check before building a log event on a hot path."""
    return _stdlib.isEnabledFor(level)
