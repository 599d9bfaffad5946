"""Notices and their delivery, against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from pdca.audit import canonical_json
from pdca.errors import InvalidInput, PdcaError
from pdca.notify import (
    CompositeNotifier,
    LogNotifier,
    Notice,
    NotificationFailed,
    Notifier,
    SmtpNotifier,
    notifier_from_settings,
)

SENDER = "pdca@pref.example.jp"
SUBJECT_JA = "【進捗管理】令和7年度 温室効果ガス排出量の算定: 期限は2026-09-30です"


def free_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Received:
    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    message: EmailMessage


class Inbox:
    """An aiosmtpd handler: refuses the first ``refuse`` messages, then keeps the others."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refuse = 0
        self.reply = "451 4.3.0 try again later"
        self.unknown: set[str] = set()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.unknown:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse > 0:
            self.refuse -= 1
            return self.reply
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), message))
        return "250 OK"


@dataclass(frozen=True)
class Server:
    inbox: Inbox
    port: int

    def notifier(self, **kwargs: object) -> SmtpNotifier:
        return SmtpNotifier(
            "127.0.0.1",
            self.port,
            SENDER,
            local_hostname="localhost",
            timeout=5.0,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
def smtp_server() -> Iterator[Server]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, server_hostname="localhost", ready_timeout=5.0
    )
    controller.start()
    try:
        yield Server(inbox, port)
    finally:
        controller.stop()


def make_notice(**changes: object) -> Notice:
    notice = Notice(
        kind="reminder",
        ref="cycle:431001:2025",
        step="calculate_emissions",
        step_title_ja="温室効果ガス排出量の算定",
        step_title_en="Calculate greenhouse-gas emissions",
        fiscal_year=2025,
        due="2026-09-30",
        recipients=("tanaka@city.example.jp", "suzuki@city.example.jp"),
        people=("tanaka", "suzuki"),
        key="fire:cycle:431001:2025:calculate_emissions:reminder:2026-09-23",
    )
    return dataclasses.replace(notice, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the notice


def test_subjects_in_japanese_and_english() -> None:
    notice = make_notice()
    assert notice.subject() == SUBJECT_JA
    assert notice.subject("ja") == notice.subject()
    assert notice.subject("en") == (
        "[PDCA] FY2025 Calculate greenhouse-gas emissions: due on 2026-09-30"
    )
    assert "期限を過ぎています" in make_notice(kind="overdue").subject()
    assert "overdue" in make_notice(kind="overdue").subject("en")
    assert "受付が始まりました" in make_notice(kind="step_open").subject()
    assert "open" in make_notice(kind="step_open").subject("en")
    assert "令和元年度" in make_notice(fiscal_year=2019).subject()
    with pytest.raises(InvalidInput, match="unknown language"):
        notice.subject("fr")


def test_bodies() -> None:
    notice = make_notice()
    ja, en = notice.body(), notice.body("en")
    assert "令和7年度" in ja and "2026-09-30" in ja and "cycle:431001:2025" in ja
    assert "tanaka、suzuki" in ja
    assert "FY2025" in en and "Calculate greenhouse-gas emissions" in en
    assert notice.email_body().index(ja.strip()) < notice.email_body().index(en.strip())


def test_notice_json_round_trips() -> None:
    notice = make_notice(kind="overdue", recipients=(), people=("佐藤",))
    text = notice.to_json()
    assert text == canonical_json(notice.to_dict())
    assert text.startswith('{"due":"2026-09-30","fiscal_year":2025,')
    assert "佐藤" in text  # UTF-8 kept as is
    again = Notice.from_json(text)
    assert again == notice
    assert isinstance(again.recipients, tuple) and isinstance(again.people, tuple)
    assert Notice.from_json(text.encode("utf-8")) == notice


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "malformed"),
        ("[]", "must be an object"),
        ('{"kind":"reminder"}', "missing"),
        (make_notice().to_json()[:-1] + ',"extra":1}', "unknown extra"),
        (make_notice().to_json().replace('"reminder"', '"memo"'), "unknown notice kind"),
        (make_notice().to_json().replace("2026-09-30", "2026-02-30"), "not a date"),
        (make_notice().to_json().replace("2025,", '"2025",'), "integer"),
    ],
)
def test_notice_from_bad_json_is_invalid_input(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Notice.from_json(text)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "later"}, "kind"),
        ({"ref": "nocolon"}, None),
        ({"step": "bad step"}, "step"),
        ({"step_title_ja": ""}, "step_title_ja"),
        ({"step_title_en": "two\nlines"}, "step_title_en"),
        ({"fiscal_year": True}, "fiscal_year"),
        ({"due": "20260930"}, "due"),
        ({"recipients": ("someone",)}, "recipients"),
        ({"recipients": ("a@b.jp\r\nBcc: x@y.jp",)}, "recipients"),
        ({"recipients": "a@b.jp"}, "recipients"),
        ({"key": ""}, "key"),
    ],
)
def test_invalid_notice_cannot_exist(changes: dict[str, object], field: str | None) -> None:
    with pytest.raises(InvalidInput) as info:
        make_notice(**changes)
    assert info.value.field == field


def test_notification_failed_is_a_pdca_error() -> None:
    assert issubclass(NotificationFailed, PdcaError)
    assert NotificationFailed.code == "notification_failed"


# --------------------------------------------------------------------------- LogNotifier


def test_log_notifier_logs_the_notice() -> None:
    notice = make_notice()
    with structlog.testing.capture_logs() as logs:
        LogNotifier().send(notice)
        LogNotifier().send(make_notice(recipients=()))
    assert len(logs) == 2
    event = logs[0]
    assert event["event"] == "notice"
    assert event["log_level"] == "info"
    assert event["kind"] == "reminder"
    assert event["ref"] == "cycle:431001:2025"
    assert event["step"] == "calculate_emissions"
    assert event["due"] == "2026-09-30"
    assert event["recipients"] == list(notice.recipients)
    assert event["key"] == notice.key
    assert logs[1]["recipients"] == []


# --------------------------------------------------------------------------- SmtpNotifier


def test_reminder_is_delivered(smtp_server: Server) -> None:
    notice = make_notice()
    with structlog.testing.capture_logs() as logs:
        smtp_server.notifier().send(notice)
    [got] = smtp_server.inbox.received
    assert got.mail_from == SENDER
    assert got.rcpt_tos == notice.recipients
    message = got.message
    assert message["Subject"] == SUBJECT_JA
    assert message["From"] == SENDER
    assert [a.addr_spec for a in message["To"].addresses] == list(notice.recipients)
    assert message["X-Pdca-Key"] == notice.key
    assert message["Message-ID"]
    assert message.get_content_charset() == "utf-8"
    body = message.get_content()
    assert "令和7年度" in body and "期限は2026-09-30です" in body
    assert "Calculate greenhouse-gas emissions" in body and "is due on 2026-09-30" in body
    assert [e["event"] for e in logs] == ["notice_mailed"]


def test_the_same_notice_gets_the_same_message_id(smtp_server: Server) -> None:
    notifier = smtp_server.notifier()
    notifier.send(make_notice())
    notifier.send(make_notice())
    notifier.send(make_notice(kind="overdue"))
    ids = [r.message["Message-ID"] for r in smtp_server.inbox.received]
    assert ids[0] == ids[1] != ids[2]


def test_overdue_notice_subject_on_the_wire(smtp_server: Server) -> None:
    smtp_server.notifier().send(make_notice(kind="overdue", recipients=("a@b.example.jp",)))
    [got] = smtp_server.inbox.received
    assert "期限を過ぎています" in got.message["Subject"]
    assert got.rcpt_tos == ("a@b.example.jp",)


def test_refusal_raises_then_delivery_succeeds_once_the_server_recovers(
    smtp_server: Server,
) -> None:
    smtp_server.inbox.refuse = 2
    notifier = smtp_server.notifier()
    notice = make_notice()
    for _ in range(2):
        with pytest.raises(NotificationFailed) as info:
            notifier.send(notice)
        error = info.value
        text = str(error)
        assert "451 4.3.0 try again later" in text
        assert f"127.0.0.1:{smtp_server.port}" in text
        assert "\n" not in text and "Traceback" not in text
        assert error.smtp_code == 451
        assert not error.permanent
        assert error.server == f"127.0.0.1:{smtp_server.port}"
        assert error.code == "notification_failed"
    assert smtp_server.inbox.received == []
    notifier.send(notice)
    [got] = smtp_server.inbox.received
    assert got.message["X-Pdca-Key"] == notice.key


def test_permanent_refusal_is_marked_permanent(smtp_server: Server) -> None:
    smtp_server.inbox.refuse = 1
    smtp_server.inbox.reply = "554 5.7.1 message rejected"
    with pytest.raises(NotificationFailed, match=r"554 5\.7\.1 message rejected") as info:
        smtp_server.notifier().send(make_notice())
    assert info.value.permanent
    assert info.value.smtp_code == 554


def test_some_recipients_refused_delivers_to_the_others(smtp_server: Server) -> None:
    smtp_server.inbox.unknown = {"suzuki@city.example.jp"}
    with structlog.testing.capture_logs() as logs:
        smtp_server.notifier().send(make_notice())
    [got] = smtp_server.inbox.received
    assert got.rcpt_tos == ("tanaka@city.example.jp",)
    assert [e["event"] for e in logs] == ["notice_recipients_refused", "notice_mailed"]
    assert logs[0]["refused"] == {"suzuki@city.example.jp": "550 5.1.1 no such user"}


def test_every_recipient_refused_raises(smtp_server: Server) -> None:
    smtp_server.inbox.unknown = {"tanaka@city.example.jp", "suzuki@city.example.jp"}
    with pytest.raises(NotificationFailed, match="every recipient refused") as info:
        smtp_server.notifier().send(make_notice())
    assert "tanaka@city.example.jp: 550 5.1.1 no such user" in str(info.value)
    assert info.value.permanent and info.value.smtp_code == 550
    assert smtp_server.inbox.received == []


def test_connection_refused_raises_notification_failed() -> None:
    port = free_port()
    notifier = SmtpNotifier("127.0.0.1", port, SENDER, local_hostname="localhost", timeout=2.0)
    with structlog.testing.capture_logs() as logs, pytest.raises(NotificationFailed) as info:
        notifier.send(make_notice())
    assert str(info.value) == (
        "could not send the reminder notice for cycle:431001:2025 (calculate_emissions) "
        f"through SMTP server 127.0.0.1:{port}: connection refused"
    )
    assert info.value.smtp_code is None and not info.value.permanent
    assert [e["event"] for e in logs] == ["notice_not_sent"]
    assert logs[0]["log_level"] == "warning"


def test_starttls_not_offered_raises_notification_failed(smtp_server: Server) -> None:
    with pytest.raises(NotificationFailed, match="STARTTLS"):
        smtp_server.notifier(starttls=True).send(make_notice())
    assert smtp_server.inbox.received == []


def test_login_without_auth_offered_raises_notification_failed(smtp_server: Server) -> None:
    notifier = smtp_server.notifier(username="pdca", password="secret")
    assert "secret" not in repr(notifier)
    with pytest.raises(NotificationFailed, match="AUTH"):
        notifier.send(make_notice())


def test_notice_without_recipients_is_not_sent(smtp_server: Server) -> None:
    with structlog.testing.capture_logs() as logs:
        smtp_server.notifier().send(make_notice(recipients=()))
    assert smtp_server.inbox.received == []
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("notice_without_recipients", "warning")
    ]
    assert logs[0]["people"] == ["tanaka", "suzuki"]


def test_notice_without_recipients_needs_no_server() -> None:
    SmtpNotifier("127.0.0.1", free_port()).send(make_notice(recipients=()))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"host": ""}, "host"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"sender": "nobody"}, "sender"),
        ({"username": "u"}, "password"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_smtp_settings_are_invalid_input(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"host": "mail.example.jp", **kwargs}
    with pytest.raises(InvalidInput) as info:
        SmtpNotifier(**arguments)  # type: ignore[arg-type]
    assert info.value.field == field


# --------------------------------------------------------------------------- CompositeNotifier


class Recorder:
    def __init__(self, name: str, calls: list[str], fail: bool = False) -> None:
        self.name, self.calls, self.fail = name, calls, fail

    def send(self, notice: Notice) -> None:
        self.calls.append(self.name)
        if self.fail:
            raise NotificationFailed(f"{self.name} failed")


def test_composite_sends_in_order_and_fails_if_any_fails() -> None:
    calls: list[str] = []
    CompositeNotifier(Recorder("a", calls), Recorder("b", calls)).send(make_notice())
    assert calls == ["a", "b"]

    calls.clear()
    composite = CompositeNotifier(Recorder("a", calls, fail=True), Recorder("b", calls))
    with pytest.raises(NotificationFailed, match="a failed"):
        composite.send(make_notice())
    assert calls == ["a", "b"]  # a failure does not stop the others

    calls.clear()
    both = CompositeNotifier(Recorder("a", calls, fail=True), Recorder("b", calls, fail=True))
    with pytest.raises(NotificationFailed, match="a failed; b failed"):
        both.send(make_notice())


def test_composite_over_a_real_server(smtp_server: Server) -> None:
    smtp_server.inbox.refuse = 1
    composite = CompositeNotifier(LogNotifier(), smtp_server.notifier())
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(NotificationFailed, match="451"):
            composite.send(make_notice())
        composite.send(make_notice())
    assert [e["event"] for e in logs] == ["notice", "notice_not_sent", "notice", "notice_mailed"]
    assert len(smtp_server.inbox.received) == 1


# --------------------------------------------------------------------------- settings


def smtp_of(notifier: Notifier) -> SmtpNotifier:
    assert isinstance(notifier, CompositeNotifier)
    log, mailer = notifier.notifiers
    assert isinstance(log, LogNotifier)  # the log first
    assert isinstance(mailer, SmtpNotifier)
    return mailer


def test_settings_without_smtp_give_the_log_only() -> None:
    assert isinstance(notifier_from_settings({}), LogNotifier)
    assert isinstance(notifier_from_settings({"PDCA_SMTP_HOST": "  "}), LogNotifier)
    assert isinstance(notifier_from_settings({}, smtp={}), LogNotifier)


def test_settings_from_the_environment() -> None:
    mailer = smtp_of(
        notifier_from_settings(
            {
                "PDCA_SMTP_HOST": "mail.pref.example.jp",
                "PDCA_SMTP_PORT": "587",
                "PDCA_SMTP_FROM": "shinchoku@pref.example.jp",
                "PDCA_SMTP_STARTTLS": "true",
                "PDCA_SMTP_USER": "pdca",
                "PDCA_SMTP_PASSWORD": "s3cret",
            }
        )
    )
    assert (mailer.host, mailer.port, mailer.sender) == (
        "mail.pref.example.jp",
        587,
        "shinchoku@pref.example.jp",
    )
    assert mailer.starttls
    assert (mailer.username, mailer.password) == ("pdca", "s3cret")
    assert "s3cret" not in repr(mailer)

    plain = smtp_of(notifier_from_settings({"PDCA_SMTP_HOST": "mx", "PDCA_SMTP_STARTTLS": "1"}))
    assert (plain.port, plain.sender, plain.starttls) == (25, "pdca@localhost", True)
    assert plain.username is None


def test_settings_from_the_plan_mapping() -> None:
    mailer = smtp_of(
        notifier_from_settings(
            {},
            smtp={
                "host": "smtp.plan.example.jp",
                "port": 2525,
                "sender": "a@b.jp",
                "starttls": True,
            },
        )
    )
    assert (mailer.host, mailer.port, mailer.sender, mailer.starttls) == (
        "smtp.plan.example.jp",
        2525,
        "a@b.jp",
        True,
    )


def test_environment_wins_over_the_mapping() -> None:
    mailer = smtp_of(
        notifier_from_settings(
            {"PDCA_SMTP_HOST": "env.example.jp", "PDCA_SMTP_STARTTLS": "0"},
            smtp={"host": "plan.example.jp", "port": 2525, "starttls": True},
        )
    )
    assert mailer.host == "env.example.jp"
    assert mailer.port == 2525  # not set in the environment: the plan's
    assert not mailer.starttls


@pytest.mark.parametrize(
    ("env", "smtp", "name"),
    [
        ({"PDCA_SMTP_HOST": "mx", "PDCA_SMTP_PORT": "abc"}, None, "PDCA_SMTP_PORT"),
        ({"PDCA_SMTP_HOST": "mx", "PDCA_SMTP_PORT": "0"}, None, "PDCA_SMTP_PORT"),
        ({"PDCA_SMTP_PORT": "abc"}, {"host": "mx"}, "PDCA_SMTP_PORT"),
        ({}, {"host": "mx", "port": "abc"}, "smtp.port"),
        ({}, {"host": "mx", "port": True}, "smtp.port"),
        ({"PDCA_SMTP_HOST": "mx", "PDCA_SMTP_STARTTLS": "maybe"}, None, "PDCA_SMTP_STARTTLS"),
        ({"PDCA_SMTP_HOST": "mx", "PDCA_SMTP_FROM": "nobody"}, None, "PDCA_SMTP_FROM"),
        ({"PDCA_SMTP_HOST": "mx", "PDCA_SMTP_USER": "u"}, None, "PDCA_SMTP_PASSWORD"),
        ({}, {"host": "mx", "prot": 25}, "smtp.prot"),
        ({}, {"host": 25}, "smtp.host"),
    ],
)
def test_bad_settings_are_invalid_input(
    env: dict[str, str], smtp: dict[str, object] | None, name: str
) -> None:
    with pytest.raises(InvalidInput, match=name) as info:
        notifier_from_settings(env, smtp=smtp)
    assert info.value.field == name


def test_notifier_from_settings_delivers(smtp_server: Server) -> None:
    notifier = notifier_from_settings(
        {"PDCA_SMTP_HOST": "127.0.0.1", "PDCA_SMTP_PORT": str(smtp_server.port)},
        smtp={"host": "unused.invalid", "sender": SENDER},
    )
    notifier.send(make_notice())
    [got] = smtp_server.inbox.received
    assert got.mail_from == SENDER
