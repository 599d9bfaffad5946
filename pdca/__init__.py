"""pdca: progress management (進捗管理) of a regional climate action plan.

The public API is what this module exports; everything else is implementation.

>>> import pdca
>>> engine = pdca.Engine.open("sqlite:///pdca.db", migrate=True)  # doctest: +SKIP
"""

from __future__ import annotations

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
