"""The library's loggers: structlog over the standard ``logging`` logger ``pdca``.

The library never prints. Its events go to ``logging.getLogger("pdca")`` through structlog's
configured processors, so a host system decides where they go (and sees nothing below
WARNING unless it asks), and the CLI turns them into console or JSON lines on stderr.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

_stdlib = logging.getLogger("pdca")

#: A configuration of structlog waiting for the first event (see :func:`configure_on_first_use`).
_pending: Callable[[Any], None] | None = None


def configure_on_first_use(setup: Callable[[Any], None] | None) -> None:
    """Have ``setup(structlog)`` configure structlog when a pdca logger is first used
    (``None`` forgets a configuration not applied yet).

    Importing structlog costs a command that logs nothing (``pdca status``) about 15 ms.
    """
    global _pending
    _pending = setup


def _structlog() -> Any:
    global _pending
    import structlog

    setup, _pending = _pending, None
    if setup is not None:
        setup(structlog)
    return structlog


class _Logger:
    """A structlog logger over the ``pdca`` stdlib logger, made when it is first used."""

    __slots__ = ("_initial", "_logger")

    def __init__(self, initial: dict[str, Any]) -> None:
        self._initial = initial
        self._logger: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._logger is None or _pending is not None:
            self._logger = _structlog().wrap_logger(_stdlib, **self._initial)
        return getattr(self._logger, name)


def get_logger(**initial: Any) -> Any:
    """A structlog logger writing through the ``pdca`` stdlib logger."""
    return _Logger(initial)


def enabled(level: int = logging.INFO) -> bool:
    """Cheap check before building a log event on a hot path."""
    return _stdlib.isEnabledFor(level)
