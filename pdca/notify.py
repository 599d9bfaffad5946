"""Notices to the people responsible for a step of the yearly schedule, and their delivery.

A :class:`Notice` says that a step of a cycle is open, due soon or overdue. It is a frozen
value object (validated when built) with a canonical JSON form, so it can wait in the
outbox and be delivered, and retried, after the transaction that produced it has committed.

A :class:`Notifier` delivers notices. :meth:`Notifier.send` either returns (delivered, or
nothing to deliver) or raises :class:`NotificationFailed`, after which the caller retries
later. Delivery is at least once: a retried notice may reach someone twice, so every e-mail
carries the idempotency key of the firing that produced it in an ``X-Pdca-Key`` header, and
a deterministic ``Message-ID``, by which a receiver can drop duplicates.

* :class:`LogNotifier` logs each notice (event ``notice``) and never fails.
* :class:`SmtpNotifier` sends one e-mail per notice (Japanese subject; body in Japanese
  then English).
* :class:`CompositeNotifier` sends through several notifiers in order.
* :func:`notifier_from_settings` builds the notifier of a deployment from its environment
  (``PDCA_SMTP_*``) and the ``smtp`` table of a plan file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, ClassVar, Final, Literal, Protocol, cast, get_args, runtime_checkable

from .audit import canonical_json
from .calendar import LANGUAGES, MAX_FISCAL_YEAR, MIN_FISCAL_YEAR, TOKYO, fy_label, wareki
from .errors import InvalidInput, PdcaError
from .log import get_logger
from .types import Ref

NoticeKind = Literal["reminder", "overdue", "step_open"]
#: The kinds of notice: due soon, past due, newly open.
NOTICE_KINDS: Final[tuple[str, ...]] = get_args(NoticeKind)

_FIELDS: Final = (
    "kind",
    "ref",
    "step",
    "step_title_ja",
    "step_title_en",
    "fiscal_year",
    "due",
    "recipients",
    "people",
    "key",
)
_STEP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# One plain address (no display name): enough to refuse what would break or inject headers.
_ADDRESS_RE = re.compile(r"^[^@\s,;<>()\"]+@[^@\s,;<>()\"]+$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

_SUBJECT_PREFIX = {"ja": "【進捗管理】", "en": "[PDCA]"}


class NotificationFailed(PdcaError):
    """A notice could not be delivered now; the caller should retry it later.

    ``server`` names the server tried (``host:port``), ``smtp_code`` is the SMTP reply code
    when the server answered, and ``permanent`` is true when the server refused for good
    (a 5xx reply): retrying the same notice will not help until someone fixes the cause
    (an unknown recipient, wrong credentials).
    """

    code = "notification_failed"
    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        server: str | None = None,
        smtp_code: int | None = None,
        permanent: bool = False,
    ) -> None:
        self.server = server
        self.smtp_code = smtp_code
        self.permanent = permanent
        super().__init__(message)


# --------------------------------------------------------------------------- the notice


def _text(name: str, value: object, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value.strip() and not allow_empty):
        raise InvalidInput(f"notice {name} must be non-empty text, not {value!r}", field=name)
    if _CONTROL_RE.search(value):
        raise InvalidInput(
            f"notice {name} must be one line without control characters: {value!r}", field=name
        )
    return value


def _strings(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidInput(f"notice {name} must be a list of text, not {value!r}", field=name)
    items = tuple(cast("Iterable[object]", value))
    for item in items:
        _text(name, item)
    return cast("tuple[str, ...]", items)


@dataclass(frozen=True, kw_only=True, slots=True)
class Notice:
    """A notice about one step of a cycle's yearly schedule, to the people responsible.

    ``key`` is the idempotency key of the firing that produced the notice: the same firing
    retried produces an equal notice. ``due`` is an ISO date (``"2026-09-30"``).
    ``recipients`` (e-mail addresses) may be empty when nobody responsible has one;
    ``people`` are the person ids the notice is meant for.
    """

    kind: NoticeKind
    ref: str
    step: str
    step_title_ja: str
    step_title_en: str
    fiscal_year: int
    due: str
    recipients: tuple[str, ...] = ()
    people: tuple[str, ...] = ()
    key: str

    def __post_init__(self) -> None:
        if self.kind not in NOTICE_KINDS:
            raise InvalidInput(
                f"unknown notice kind {self.kind!r}; the kinds are {', '.join(NOTICE_KINDS)}",
                field="kind",
            )
        Ref.parse(_text("ref", self.ref))
        if not isinstance(self.step, str) or not _STEP_RE.match(self.step):
            raise InvalidInput(f"malformed schedule step id {self.step!r}", field="step")
        _text("step_title_ja", self.step_title_ja)
        _text("step_title_en", self.step_title_en)
        fy = self.fiscal_year
        if isinstance(fy, bool) or not isinstance(fy, int):
            raise InvalidInput(
                f"notice fiscal_year must be an integer, not {fy!r}", field="fiscal_year"
            )
        if not MIN_FISCAL_YEAR <= fy <= MAX_FISCAL_YEAR:
            raise InvalidInput(f"fiscal year {fy} is out of range", field="fiscal_year")
        if not isinstance(self.due, str) or not _DATE_RE.match(self.due):
            raise InvalidInput(
                f"notice due must be an ISO date YYYY-MM-DD, not {self.due!r}", field="due"
            )
        try:
            date.fromisoformat(self.due)
        except ValueError:
            raise InvalidInput(f"notice due {self.due!r} is not a date", field="due") from None
        recipients = _strings("recipients", self.recipients)
        for address in recipients:
            if not _ADDRESS_RE.match(address):
                raise InvalidInput(
                    f"{address!r} is not a plain e-mail address (name@domain)",
                    field="recipients",
                )
        object.__setattr__(self, "recipients", recipients)
        object.__setattr__(self, "people", _strings("people", self.people))
        _text("key", self.key)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """The notice as a JSON-ready mapping (tuples become lists)."""
        return {
            "kind": self.kind,
            "ref": self.ref,
            "step": self.step,
            "step_title_ja": self.step_title_ja,
            "step_title_en": self.step_title_en,
            "fiscal_year": self.fiscal_year,
            "due": self.due,
            "recipients": list(self.recipients),
            "people": list(self.people),
            "key": self.key,
        }

    def to_json(self) -> str:
        """The canonical JSON text of the notice (sorted keys, no spaces, UTF-8 kept)."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> Notice:
        """The notice :meth:`to_json` wrote; raises :class:`InvalidInput` for anything else."""
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"notice JSON is malformed: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidInput("notice JSON must be an object")
        missing = [name for name in _FIELDS if name not in value]
        unknown = sorted(set(value) - set(_FIELDS))
        if missing or unknown:
            parts = []
            if missing:
                parts.append("missing " + ", ".join(missing))
            if unknown:
                parts.append("unknown " + ", ".join(unknown))
            raise InvalidInput("notice JSON has " + "; ".join(parts))
        return cls(
            kind=value["kind"],
            ref=value["ref"],
            step=value["step"],
            step_title_ja=value["step_title_ja"],
            step_title_en=value["step_title_en"],
            fiscal_year=value["fiscal_year"],
            due=value["due"],
            recipients=_strings("recipients", value["recipients"]),
            people=_strings("people", value["people"]),
            key=value["key"],
        )

    # ------------------------------------------------------------------ text

    def _year_ja(self) -> str:
        try:
            return wareki(self.fiscal_year)
        except InvalidInput:  # before Heisei: no era name
            return fy_label(self.fiscal_year, "ja")

    def subject(self, lang: str = "ja") -> str:
        """A one-line subject, Japanese by default.

        ``【進捗管理】令和7年度 温室効果ガス排出量の算定: 期限は2026-09-30です``
        """
        _check_lang(lang)
        if lang == "ja":
            what = {
                "reminder": f"期限は{self.due}です",
                "overdue": f"期限を過ぎています（期限 {self.due}）",
                "step_open": f"受付が始まりました（期限 {self.due}）",
            }[self.kind]
            return f"{_SUBJECT_PREFIX['ja']}{self._year_ja()} {self.step_title_ja}: {what}"
        what = {
            "reminder": f"due on {self.due}",
            "overdue": f"overdue (was due on {self.due})",
            "step_open": f"now open (due on {self.due})",
        }[self.kind]
        fy = fy_label(self.fiscal_year, "en")
        return f"{_SUBJECT_PREFIX['en']} {fy} {self.step_title_en}: {what}"

    def body(self, lang: str = "ja") -> str:
        """A short plain-text message in one language (``ja`` or ``en``)."""
        _check_lang(lang)
        if lang == "ja":
            what = {
                "reminder": f"期限は{self.due}です。期限までに作業を終えてください。",
                "overdue": f"期限（{self.due}）を過ぎています。至急対応してください。",
                "step_open": f"受付が始まりました。期限は{self.due}です。",
            }[self.kind]
            lines = [
                f"{self._year_ja()}（{fy_label(self.fiscal_year, 'ja')}）の"
                f"「{self.step_title_ja}」について、{what}",
                "",
                f"対象: {self.ref}",
                f"手順: {self.step}",
                f"期限: {self.due}",
            ]
            if self.people:
                lines.append(f"担当: {'、'.join(self.people)}")
            lines += ["", "このメールは進捗管理システムから自動送信されています。"]
        else:
            what = {
                "reminder": f"is due on {self.due}. Please finish it by then.",
                "overdue": f"was due on {self.due} and is overdue. Please see to it now.",
                "step_open": f"is now open. It is due on {self.due}.",
            }[self.kind]
            lines = [
                f'{fy_label(self.fiscal_year, "en")}: "{self.step_title_en}" {what}',
                "",
                f"Reference: {self.ref}",
                f"Step: {self.step}",
                f"Due: {self.due}",
            ]
            if self.people:
                lines.append(f"People: {', '.join(self.people)}")
            lines += [
                "",
                "This message was sent automatically by the progress management system.",
            ]
        return "\n".join(lines) + "\n"

    def email_body(self) -> str:
        """The body of the e-mail: the Japanese text, then the English one."""
        return f"{self.body('ja')}\n{'-' * 40}\n\n{self.body('en')}"


def _check_lang(lang: str) -> None:
    if lang not in LANGUAGES:
        raise InvalidInput(f"unknown language {lang!r}; the languages are {', '.join(LANGUAGES)}")


# --------------------------------------------------------------------------- notifiers


@runtime_checkable
class Notifier(Protocol):
    """Something that delivers notices."""

    def send(self, notice: Notice) -> None:
        """Deliver ``notice``; raise :class:`NotificationFailed` if it should be retried."""
        ...


class LogNotifier:
    """Logs each notice at INFO (event ``notice``). Never fails."""

    def __repr__(self) -> str:
        return "LogNotifier()"

    def send(self, notice: Notice) -> None:
        get_logger().info(
            "notice",
            kind=notice.kind,
            ref=notice.ref,
            step=notice.step,
            fiscal_year=notice.fiscal_year,
            due=notice.due,
            recipients=list(notice.recipients),
            people=list(notice.people),
            key=notice.key,
        )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return _one_line(text)


class SmtpNotifier:
    """Sends one e-mail per notice to all its recipients through an SMTP server.

    Each message is UTF-8, with the Japanese subject, ``To`` = every recipient, the body in
    Japanese then English, an ``X-Pdca-Key`` header holding the notice's idempotency key
    and a ``Message-ID`` derived from the notice (equal for a retried notice). A notice
    without recipients is not sent (WARNING ``notice_without_recipients``).

    ``starttls`` upgrades the connection (certificate verified) before anything else is
    said; ``username``/``password`` log in afterwards. Every failure to deliver — the
    server refusing, the connection refused, a time-out, TLS failing — raises
    :class:`NotificationFailed` with one line naming the server and its reply. If the server
    accepts some recipients and refuses others, the message is delivered to those it
    accepted and the refused ones are logged (WARNING ``notice_recipients_refused``):
    retrying would send the message again to the others.
    """

    def __init__(
        self,
        host: str,
        port: int = 25,
        sender: str = "pdca@localhost",
        *,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        local_hostname: str | None = None,
    ) -> None:
        if not isinstance(host, str) or not host.strip() or _CONTROL_RE.search(host):
            raise InvalidInput(f"SMTP host must be a host name, not {host!r}", field="host")
        self.host = host.strip()
        self.port = _port(port, "port")
        if not isinstance(sender, str) or not _ADDRESS_RE.match(sender):
            raise InvalidInput(
                f"sender must be a plain e-mail address (name@domain), not {sender!r}",
                field="sender",
            )
        self.sender = sender
        self.starttls = bool(starttls)
        if (username is None) != (password is None):
            raise InvalidInput(
                "SMTP username and password go together: give both or neither",
                field="username" if username is None else "password",
            )
        self.username = username
        self.password = password
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidInput(
                f"SMTP timeout must be a positive number of seconds, not {timeout!r}",
                field="timeout",
            )
        self.timeout = float(timeout)
        self.local_hostname = local_hostname

    @property
    def server(self) -> str:
        """``host:port``, as messages name the server."""
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        login = f", username={self.username!r}, password='***'" if self.username else ""
        return (
            f"SmtpNotifier({self.host!r}, {self.port}, {self.sender!r}, "
            f"starttls={self.starttls}{login}, timeout={self.timeout})"
        )

    def build_message(self, notice: Notice) -> EmailMessage:
        """The e-mail :meth:`send` sends for ``notice``."""
        message = EmailMessage()
        message["Subject"] = notice.subject("ja")
        message["From"] = self.sender
        message["To"] = ", ".join(notice.recipients)
        message["Date"] = format_datetime(datetime.now(TOKYO))
        digest = hashlib.sha256(notice.to_json().encode("utf-8")).hexdigest()[:32]
        domain = self.sender.rpartition("@")[2]
        message["Message-ID"] = f"<pdca.{digest}@{domain}>"
        message["X-Pdca-Key"] = notice.key
        message["X-Pdca-Ref"] = notice.ref
        message["X-Pdca-Kind"] = notice.kind
        message["Content-Language"] = "ja, en"
        message.set_content(notice.email_body(), charset="utf-8", cte="base64")
        return message

    def _failed(
        self, notice: Notice, reason: str, smtp_code: int | None = None, *, permanent: bool = False
    ) -> NotificationFailed:
        get_logger().warning(
            "notice_not_sent",
            kind=notice.kind,
            ref=notice.ref,
            step=notice.step,
            key=notice.key,
            server=self.server,
            reason=reason,
            permanent=permanent,
        )
        return NotificationFailed(
            f"could not send the {notice.kind} notice for {notice.ref} ({notice.step}) "
            f"through SMTP server {self.server}: {reason}",
            server=self.server,
            smtp_code=smtp_code,
            permanent=permanent,
        )

    def send(self, notice: Notice) -> None:
        log = get_logger()
        if not notice.recipients:
            log.warning(
                "notice_without_recipients",
                kind=notice.kind,
                ref=notice.ref,
                step=notice.step,
                key=notice.key,
                people=list(notice.people),
            )
            return
        message = self.build_message(notice)
        try:
            with smtplib.SMTP(
                self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
            ) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username is not None:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(
                    message, from_addr=self.sender, to_addrs=list(notice.recipients)
                )
        except smtplib.SMTPRecipientsRefused as exc:
            replies = [(a, int(c), _reply_text(m)) for a, (c, m) in exc.recipients.items()]
            reason = "every recipient refused: " + "; ".join(
                f"{address}: {code} {text}" for address, code, text in replies
            )
            codes = [code for _, code, _ in replies]
            raise self._failed(
                notice,
                reason,
                codes[0] if codes else None,
                permanent=bool(codes) and all(500 <= c < 600 for c in codes),
            ) from exc
        except smtplib.SMTPResponseException as exc:
            code = int(exc.smtp_code)
            raise self._failed(
                notice,
                f"{code} {_reply_text(exc.smtp_error)}",
                code,
                permanent=500 <= code < 600,
            ) from exc
        except smtplib.SMTPException as exc:
            raise self._failed(notice, _one_line(str(exc)) or type(exc).__name__) from exc
        except TimeoutError as exc:
            raise self._failed(notice, f"timed out after {self.timeout:g} s") from exc
        except ConnectionRefusedError as exc:
            raise self._failed(notice, "connection refused") from exc
        except OSError as exc:
            reason = _one_line(exc.strerror or str(exc)) or type(exc).__name__
            raise self._failed(notice, reason) from exc
        if refused:
            log.warning(
                "notice_recipients_refused",
                kind=notice.kind,
                ref=notice.ref,
                step=notice.step,
                key=notice.key,
                server=self.server,
                refused={a: f"{c} {_reply_text(m)}" for a, (c, m) in refused.items()},
            )
        log.info(
            "notice_mailed",
            kind=notice.kind,
            ref=notice.ref,
            step=notice.step,
            key=notice.key,
            server=self.server,
            recipients=len(notice.recipients) - len(refused),
        )


class CompositeNotifier:
    """Sends each notice through every notifier, in order.

    A failure of one notifier does not stop the others; once all have been tried,
    :meth:`send` raises the failure (or one :class:`NotificationFailed` combining several).
    Exceptions other than :class:`NotificationFailed` (bugs) propagate at once.
    """

    def __init__(self, *notifiers: Notifier) -> None:
        self.notifiers: tuple[Notifier, ...] = notifiers

    def __repr__(self) -> str:
        return f"CompositeNotifier({', '.join(repr(n) for n in self.notifiers)})"

    def send(self, notice: Notice) -> None:
        failures: list[NotificationFailed] = []
        for notifier in self.notifiers:
            try:
                notifier.send(notice)
            except NotificationFailed as exc:
                failures.append(exc)
        if len(failures) == 1:
            raise failures[0]
        if failures:
            first = failures[0]
            raise NotificationFailed(
                "; ".join(f.message for f in failures),
                server=first.server,
                smtp_code=first.smtp_code,
                permanent=all(f.permanent for f in failures),
            )


# --------------------------------------------------------------------------- settings


def _port(value: object, name: str) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
    if number is None or not 1 <= number <= 65535:
        raise InvalidInput(f"{name} must be a port number 1-65535, not {value!r}", field=name)
    return number


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def _flag(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidInput(f"{name} must be true or false (1/0), not {value!r}", field=name)


class _Settings:
    """One SMTP setting after another: the environment variable, else the plan's key."""

    KEYS: ClassVar[tuple[str, ...]] = ("host", "port", "sender", "starttls")

    def __init__(self, env: Mapping[str, str], smtp: Mapping[str, Any] | None) -> None:
        self.env = env
        self.smtp: Mapping[str, Any] = smtp or {}
        unknown = sorted(str(k) for k in self.smtp if k not in self.KEYS)
        if unknown:
            raise InvalidInput(
                f"unknown SMTP setting {', '.join(unknown)}; "
                f"the settings are {', '.join(self.KEYS)}",
                field="smtp." + unknown[0],
            )

    def get(self, var: str, key: str | None) -> tuple[object, str] | None:
        """(value, name to blame) of a setting, or None when it is not set anywhere."""
        text = self.env.get(var)
        if text is not None and text.strip():
            return text.strip(), var
        if key is not None and self.smtp.get(key) is not None:
            return self.smtp[key], f"smtp.{key}"
        return None


def notifier_from_settings(
    env: Mapping[str, str] = os.environ, *, smtp: Mapping[str, Any] | None = None
) -> Notifier:
    """The notifier of a deployment: a :class:`LogNotifier`, plus SMTP when configured.

    SMTP is configured when ``PDCA_SMTP_HOST`` is set (non-empty) in ``env`` or ``smtp``
    (the ``smtp`` table of a plan file: ``host``, ``port``, ``sender``, ``starttls``) has a
    host. Each setting comes from its variable when that is set, else from the mapping,
    else its default: ``PDCA_SMTP_PORT`` (25), ``PDCA_SMTP_FROM`` (``pdca@localhost``),
    ``PDCA_SMTP_STARTTLS`` (``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``;
    false). Credentials come from the environment only (``PDCA_SMTP_USER``,
    ``PDCA_SMTP_PASSWORD``), never from a plan file. A malformed value raises
    :class:`InvalidInput` naming the variable or key. The result logs first, then mails.
    """
    log = LogNotifier()
    settings = _Settings(env, smtp)
    host = settings.get("PDCA_SMTP_HOST", "host")
    if host is None:
        return log
    host_value, host_name = host
    if not isinstance(host_value, str):
        raise InvalidInput(f"{host_name} must be a host name, not {host_value!r}", field=host_name)
    port = settings.get("PDCA_SMTP_PORT", "port")
    sender = settings.get("PDCA_SMTP_FROM", "sender")
    starttls = settings.get("PDCA_SMTP_STARTTLS", "starttls")
    username = settings.get("PDCA_SMTP_USER", None)
    password = env.get("PDCA_SMTP_PASSWORD") or None  # not stripped: spaces may belong
    if sender is not None and not (isinstance(sender[0], str) and _ADDRESS_RE.match(sender[0])):
        raise InvalidInput(
            f"{sender[1]} must be a plain e-mail address (name@domain), not {sender[0]!r}",
            field=sender[1],
        )
    if (username is None) != (password is None):
        raise InvalidInput(
            "PDCA_SMTP_USER and PDCA_SMTP_PASSWORD go together: set both or neither",
            field="PDCA_SMTP_PASSWORD" if password is None else "PDCA_SMTP_USER",
        )
    try:
        mailer = SmtpNotifier(
            host_value,
            _port(port[0], port[1]) if port is not None else 25,
            cast(str, sender[0]) if sender is not None else "pdca@localhost",
            starttls=_flag(starttls[0], starttls[1]) if starttls is not None else False,
            username=cast(str, username[0]) if username is not None else None,
            password=password,
        )
    except InvalidInput as exc:
        field = {"host": host_name}.get(exc.field or "", exc.field)
        raise InvalidInput(exc.reason, field=field) from None
    return CompositeNotifier(log, mailer)


__all__ = [
    "NOTICE_KINDS",
    "CompositeNotifier",
    "LogNotifier",
    "Notice",
    "NoticeKind",
    "NotificationFailed",
    "Notifier",
    "SmtpNotifier",
    "notifier_from_settings",
]
