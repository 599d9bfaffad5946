"""pdca: progress management (進捗管理) of a regional climate action plan.

The public API is what this module exports; everything else is implementation.

>>> import pdca
>>> engine = pdca.Engine.open("sqlite:///pdca.db", migrate=True)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Engine
    from .errors import (
        AuditChainBroken,
        ConcurrentTransition,
        DefinitionError,
        DuplicateEntity,
        GuardFailed,
        InvalidData,
        InvalidInput,
        PdcaError,
        PermissionDenied,
        SchemaOutdated,
        StorageError,
        TransitionNotAllowed,
        TransitionRefused,
        UnknownActor,
        UnknownReference,
        UnknownTrigger,
    )
    from .types import (
        AuditEntry,
        EntityView,
        Person,
        Problem,
        Ref,
        Role,
        Transition,
        VerifyReport,
    )

# Names are imported on first use, so that `pdca --help` (and a host that only needs the
# errors) does not pay for SQLAlchemy, transitions and the rest at start-up.
_WHERE = {
    "Engine": ".engine",
    **dict.fromkeys(
        ["AuditChainBroken", "ConcurrentTransition", "DefinitionError", "DuplicateEntity",
         "GuardFailed", "InvalidData", "InvalidInput", "PdcaError", "PermissionDenied",
         "SchemaOutdated", "StorageError", "TransitionNotAllowed", "TransitionRefused",
         "UnknownActor", "UnknownReference", "UnknownTrigger"],
        ".errors",
    ),
    **dict.fromkeys(
        ["AuditEntry", "EntityView", "Person", "Problem", "Ref", "Role", "Transition",
         "VerifyReport"],
        ".types",
    ),
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pdca' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "AuditChainBroken",
    "AuditEntry",
    "ConcurrentTransition",
    "DefinitionError",
    "DuplicateEntity",
    "Engine",
    "EntityView",
    "GuardFailed",
    "InvalidData",
    "InvalidInput",
    "PdcaError",
    "PermissionDenied",
    "Person",
    "Problem",
    "Ref",
    "Role",
    "SchemaOutdated",
    "StorageError",
    "Transition",
    "TransitionNotAllowed",
    "TransitionRefused",
    "UnknownActor",
    "UnknownReference",
    "UnknownTrigger",
    "VerifyReport",
    "__version__",
]
