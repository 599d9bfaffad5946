"""The exceptions of pdca: one root, one subclass per failure a caller handles differently.

Every error carries the attributes a caller needs (the entity reference, the trigger, the
state) and builds its message from them, so a host system can react to the attributes and a
person can read the message. Each class also knows its machine-readable ``code`` and the exit
status the CLI gives it: 1 for a refusal, 2 for bad input or usage.

Definition-time errors (a broken workflow or plan definition) derive from
:class:`DefinitionError`; everything else happens at run time.
"""

from __future__ import annotations

from collections.abc import Sequence


class PdcaError(Exception):
    """Root of every error raised by pdca."""

    code: str = "error"
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------- definition time


class DefinitionError(PdcaError):
    """A workflow or plan definition is inconsistent; raised when it is built or loaded."""

    code = "definition_error"
    exit_code = 2


# --------------------------------------------------------------------------- bad input


class InvalidInput(PdcaError):
    """The request itself is wrong (unknown name, bad value); nothing was written.

    ``source``, ``line`` and ``field`` locate the problem when the input came from a file.
    """

    code = "invalid_input"
    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.source = source
        self.line = line
        self.field = field
        where = []
        if source is not None:
            where.append(source if line is None else f"{source}:{line}")
        elif line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.reason = message


class UnknownReference(InvalidInput):
    """No entity has this reference (or the reference is not well formed)."""

    code = "unknown_reference"

    def __init__(self, ref: str, detail: str | None = None) -> None:
        self.ref = ref
        super().__init__(detail or f"no such entity: {ref}")


class UnknownTrigger(InvalidInput):
    """The workflow of the entity has no trigger of this name."""

    code = "unknown_trigger"

    def __init__(self, ref: str, trigger: str, known: Sequence[str]) -> None:
        self.ref = ref
        self.trigger = trigger
        self.known = tuple(known)
        super().__init__(
            f"{ref}: unknown trigger {trigger!r}; the triggers of this workflow are "
            + ", ".join(self.known)
        )


class UnknownActor(InvalidInput):
    """The acting person is not registered (or has been deactivated)."""

    code = "unknown_actor"

    def __init__(self, actor: str, detail: str | None = None) -> None:
        self.actor = actor
        super().__init__(detail or f"unknown actor {actor!r}: register the person first")


class InvalidData(InvalidInput):
    """A value submitted with a transition or record is missing or of the wrong type."""

    code = "invalid_data"


class DuplicateEntity(InvalidInput):
    """An entity with this reference already exists."""

    code = "duplicate"

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"{ref} already exists")


# --------------------------------------------------------------------------- refusals


class TransitionRefused(PdcaError):
    """Base of the refusals: the request was understood but may not happen now."""

    code = "refused"
    exit_code = 1

    def __init__(self, message: str, *, ref: str, trigger: str, state: str) -> None:
        self.ref = ref
        self.trigger = trigger
        self.state = state
        super().__init__(message)


class TransitionNotAllowed(TransitionRefused):
    """The entity's current state does not allow this trigger."""

    code = "not_allowed"

    def __init__(self, *, ref: str, trigger: str, state: str, allowed: Sequence[str]) -> None:
        self.allowed = tuple(allowed)
        hint = (
            "the triggers allowed now are " + ", ".join(self.allowed)
            if self.allowed
            else "no trigger is allowed in this state"
        )
        super().__init__(
            f"cannot {trigger} {ref}: it is {state}; {hint}",
            ref=ref,
            trigger=trigger,
            state=state,
        )


class GuardFailed(TransitionRefused):
    """A guard of the transition refused it; ``reasons`` say what is missing."""

    code = "guard_failed"

    def __init__(
        self, *, ref: str, trigger: str, state: str, reasons: Sequence[str]
    ) -> None:
        self.reasons = tuple(reasons)
        super().__init__(
            f"cannot {trigger} {ref}: " + "; ".join(self.reasons),
            ref=ref,
            trigger=trigger,
            state=state,
        )


class PermissionDenied(TransitionRefused):
    """The acting person's role (or municipality) does not allow this trigger."""

    code = "permission_denied"

    def __init__(
        self, *, ref: str, trigger: str, state: str, actor: str, role: str, reason: str
    ) -> None:
        self.actor = actor
        self.role = role
        self.reason = reason
        super().__init__(
            f"{actor} ({role}) may not {trigger} {ref}: {reason}",
            ref=ref,
            trigger=trigger,
            state=state,
        )


class ConcurrentTransition(TransitionRefused):
    """Another change to the same entity won; read the entity again and retry."""

    code = "conflict"

    def __init__(self, *, ref: str, trigger: str, state: str, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"cannot {trigger} {ref} now: {detail}; read it again and retry",
            ref=ref,
            trigger=trigger,
            state=state,
        )


# --------------------------------------------------------------------------- audit and storage


class AuditChainBroken(PdcaError):
    """The audit log does not verify: ``seq`` names the first entry found broken."""

    code = "audit_broken"
    exit_code = 1

    def __init__(self, *, seq: int | None, ref: str | None, reason: str, detail: str) -> None:
        self.seq = seq
        self.ref = ref
        self.reason = reason
        self.detail = detail
        where = f"entry {seq}" if seq is not None else "the log"
        if ref is not None:
            where += f" ({ref})"
        super().__init__(f"audit log broken at {where}: {reason}: {detail}")


class StorageError(PdcaError):
    """The database could not be reached or is not in a usable state."""

    code = "storage_error"
    exit_code = 1


class InvalidDatabaseUrl(StorageError):
    """The database URL is not one pdca can use (bad input, not an outage)."""

    code = "invalid_database_url"
    exit_code = 2


class SchemaOutdated(StorageError):
    """The database schema is missing or older than this version of pdca."""

    code = "schema_outdated"
    exit_code = 2


__all__ = [
    "AuditChainBroken",
    "ConcurrentTransition",
    "DefinitionError",
    "DuplicateEntity",
    "GuardFailed",
    "InvalidData",
    "InvalidDatabaseUrl",
    "InvalidInput",
    "PdcaError",
    "PermissionDenied",
    "SchemaOutdated",
    "StorageError",
    "TransitionNotAllowed",
    "TransitionRefused",
    "UnknownActor",
    "UnknownReference",
    "UnknownTrigger",
]
