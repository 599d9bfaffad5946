"""The ``pdca`` command: parse, call the library, print. No business rules here.

Each command opens the engine, calls one library function and prints the result, as a
table (Japanese or English headers) or, with ``--json``, as JSON on stdout. Library errors
become one line on stderr (or one JSON object with ``--json``) and exit status 1 (refused)
or 2 (bad input or usage). Heavy modules are imported inside the commands so that
``pdca --help`` starts fast.
"""

from __future__ import annotations

import gc
import json
import locale
import logging
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from .engine import Engine
    from .types import AuditEntry

F = TypeVar("F", bound=Callable[..., Any])


# ----------------------------------------------------------------------------- plumbing


class CliError(click.ClickException):
    """A library error on its way to the user: one line (or one JSON object), an exit code."""

    def __init__(self, message: str, *, code: str, exit_code: int, as_json: bool) -> None:
        super().__init__(message)
        self.code = code
        # click declares exit_code on the class; ours depends on the error.
        self.exit_code = exit_code  # type: ignore[misc]
        self.as_json = as_json

    def show(self, file: Any = None) -> None:
        if self.as_json:
            click.echo(json.dumps({"error": self.code, "message": self.message},
                                  ensure_ascii=False), err=True)
        else:
            click.echo(f"Error: {self.message}", err=True)


class State:
    """What the global options say, shared by every command."""

    def __init__(self, *, db: str, actor: str | None, lang: str) -> None:
        self.db = db
        self.actor = actor
        self.lang = lang
        self.as_json = False
        self._engine: Engine | None = None

    def engine(self, *, migrate: bool = False) -> Engine:
        if self._engine is None:
            self._engine = _engine_class().open(self.db, migrate=migrate)
        return self._engine

    def need_actor(self) -> str:
        if not self.actor:
            self.fail("who is acting? give --actor ID or set PDCA_ACTOR", code="usage")
        return self.actor

    def fail(self, message: str, *, code: str = "invalid_input", exit_code: int = 2) -> NoReturn:
        raise CliError(message, code=code, exit_code=exit_code, as_json=self.as_json)

    def close(self) -> None:
        from . import log

        if self._engine is not None:
            self._engine.close()
            self._engine = None
        # A configuration that no event needed goes with the command: it must not apply
        # later in a process that runs commands in-process (tests).
        log.configure_on_first_use(None)

    def t(self, ja: str, en: str) -> str:
        return ja if self.lang == "ja" else en


def _engine_class() -> type[Engine]:
    """:class:`pdca.Engine`, imported the first time without the cyclic garbage collector.

    The import (SQLAlchemy above all) makes some hundred thousand objects that live as long
    as the process, and no garbage: the collector would walk them again and again while
    they are made, and once more at exit, for about a fifth of `pdca status`. So it waits
    until the import is done, and then leaves what the import made out of its collections
    (``gc.freeze``); everything made afterwards is collected as usual.
    """
    if f"{__package__}.engine" in sys.modules or not gc.isenabled():
        from .engine import Engine

        return Engine
    gc.disable()
    try:
        from .engine import Engine
    finally:
        gc.freeze()
        gc.enable()
    return Engine


def _default_lang() -> str:
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value:
            return "ja" if value.lower().startswith("ja") else "en"
    try:
        current = locale.getlocale()[0] or ""
    except ValueError:
        current = ""
    return "ja" if current.lower().startswith("ja") else "en"


class PdcaGroup(click.Group):
    """Turns pdca's errors into :class:`CliError` for every command below it."""

    def invoke(self, ctx: click.Context) -> Any:
        from .errors import PdcaError

        try:
            return super().invoke(ctx)
        except PdcaError as exc:
            state = ctx.find_object(State)
            raise CliError(
                exc.message,
                code=exc.code,
                exit_code=exc.exit_code,
                as_json=bool(state and state.as_json),
            ) from exc


def json_option(func: F) -> F:
    """``--json``: stdout becomes JSON only, and errors become JSON on stderr."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        state = ctx.find_object(State)
        if state is not None:
            state.as_json = state.as_json or value
        return value

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=True,
        is_eager=True,
        callback=callback,
        help="Print JSON instead of a table.",
    )(func)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table that lines up Japanese (double-width) text too."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(c + " " * (w - _width(c)) for c, w in zip(row, widths, strict=True))
            .rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _configure_logging(verbose: bool, quiet: bool) -> None:
    from . import log

    # Commands print their own results; their log events (every transition, with its
    # reference and actor) show with --verbose, so that stderr stays one line per error.
    level = logging.ERROR if quiet else (logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("pdca")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    console = sys.stderr.isatty()

    def setup(structlog: Any) -> None:
        renderer: Any = (
            structlog.dev.ConsoleRenderer(colors=False)
            if console
            else structlog.processors.JSONRenderer(ensure_ascii=False)
        )
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                renderer,
            ],
        )

    # structlog is imported (and configured) by the first event logged, if any.
    log.configure_on_first_use(setup)


# ----------------------------------------------------------------------------- the group


@click.group(cls=PdcaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    envvar="PDCA_DATABASE_URL",
    default="sqlite:///pdca.db",
    show_default=True,
    help="Database URL (env PDCA_DATABASE_URL): sqlite:///FILE or postgresql://USER@HOST/DB.",
)
@click.option("--actor", envvar="PDCA_ACTOR", help="Who is acting (env PDCA_ACTOR).")
@click.option(
    "--lang",
    type=click.Choice(["ja", "en"]),
    envvar="PDCA_LANG",
    default=None,
    help="Language of tables (env PDCA_LANG; default from the locale).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every event (info) on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="Log errors only.")
@click.version_option(package_name="pdca-engine", prog_name="pdca")
@click.pass_context
def main(
    ctx: click.Context, db: str, actor: str | None, lang: str | None, verbose: bool, quiet: bool
) -> None:
    """Progress management (進捗管理) of a regional climate action plan.

    \b
    Example:
        pdca --db sqlite:///pdca.db init --admin admin
        pdca --actor staff-kumamoto advance measure:M-001 commercialise
    """
    _configure_logging(verbose, quiet)
    state = State(db=db, actor=actor, lang=lang or _default_lang())
    ctx.obj = state
    ctx.call_on_close(state.close)


pass_state = click.make_pass_decorator(State)


# ----------------------------------------------------------------------------- commands


#: A fiscal or inventory year on the command line.
YEAR = click.IntRange(1900, 2999)


class Moment(click.ParamType):  # type: ignore[type-arg]  # click's ParamType is generic
    """A time on the command line: ``YYYY-MM-DD`` or an ISO date-time (Tokyo by default)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from datetime import datetime

        from .calendar import parse_moment
        from .errors import InvalidInput

        if isinstance(value, datetime):
            return value
        try:
            return parse_moment(str(value))
        except InvalidInput as exc:
            self.fail(exc.message, param, ctx)


@main.command()
@click.option("--plan", "plan_source", default=None,
              help="A bundled plan (kumamoto) or a plan file (.toml) to load.")
@click.option("--admin", "admin_id", help="Register this id as the first administrator.")
@click.option("--simulation", is_flag=True,
              help="Make a training database with a virtual clock (for good).")
@click.option("--start", type=Moment(), default=None,
              help="With --simulation: where the virtual clock starts (default: now).")
@json_option
@pass_state
def init(
    state: State,
    plan_source: str | None,
    admin_id: str | None,
    simulation: bool,
    start: Any,
    as_json: bool,
) -> None:
    """Create or upgrade the database, load the plan, register the first administrator.

    Running it again is safe: the schema is upgraded, an unchanged plan is left alone.

    \b
    Example:
        pdca init --plan kumamoto --admin admin
        pdca --db sqlite:///training.db init --simulation --start 2025-03-01 --admin admin
    """
    from datetime import UTC, datetime

    from .engine import Engine

    if simulation:
        state._engine = Engine.create_simulation(state.db, start=start or datetime.now(UTC))
    elif start is not None:
        state.fail("--start goes with --simulation", code="usage")
    engine = state.engine(migrate=True)
    created_admin = False
    if admin_id and not any(p.id == admin_id for p in engine.people()):
        engine.bootstrap_admin(admin_id)
        created_admin = True
    plan_id = None
    if plan_source:
        actor = admin_id or state.actor
        if not actor:
            state.fail("loading a plan needs an administrator: give --admin ID", code="usage")
        plan_id = engine.load_plan(plan_source, actor=actor).id
    if as_json:
        emit_json({"database": state.db, "admin": admin_id, "admin_created": created_admin,
                   "plan": plan_id, "simulation": engine.simulation})
        return
    click.echo(state.t(f"データベースを準備しました: {state.db}", f"database ready: {state.db}"))
    if plan_id:
        click.echo(state.t(f"計画: {plan_id}", f"plan: {plan_id}"))
    if engine.simulation:
        now = engine.now().astimezone(_tz())
        click.echo(state.t(f"シミュレーション用データベース（仮想時刻 {now:%Y-%m-%d %H:%M} JST）",
                           f"SIMULATION database (virtual time {now:%Y-%m-%d %H:%M} JST)"))


@main.group()
def people() -> None:
    """Who may act: register people and list them."""


@people.command("add")
@click.argument("person_id")
@click.option("--role", required=True, help="staff, secretariat, clerk, auditor or admin.")
@click.option("--municipality", help="6-digit municipality code (staff only).")
@click.option("--name", default="", help="Display name.")
@click.option("--email", help="E-mail address for notices.")
@pass_state
def people_add(
    state: State,
    person_id: str,
    role: str,
    municipality: str | None,
    name: str,
    email: str | None,
) -> None:
    """Register someone who may act (administrators only).

    \b
    Example:
        pdca --actor admin people add staff-kumamoto --role staff --municipality 431001
    """
    person = state.engine().add_person(
        person_id,
        role=role,
        municipality=municipality,
        name=name,
        email=email,
        actor=state.need_actor(),
    )
    click.echo(f"person:{person.id}")


@people.command("list")
@json_option
@pass_state
def people_list(state: State, as_json: bool) -> None:
    """Everyone registered, with role, municipality and whether active.

    \b
    Example:
        pdca people list --json
    """
    found = state.engine().people()
    if as_json:
        emit_json(
            [
                {
                    "id": p.id,
                    "role": p.role.value,
                    "municipality": p.municipality,
                    "name": p.name,
                    "active": p.active,
                }
                for p in found
            ]
        )
        return
    click.echo(
        table(
            [state.t("ID", "id"), state.t("役割", "role"), state.t("市町村", "municipality"),
             state.t("氏名", "name"), state.t("有効", "active")],
            [[p.id, p.role.value, p.municipality or "", p.name, "✓" if p.active else "-"]
             for p in found],
        )
    )


def _parse_sets(state: State, values: Sequence[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            state.fail(f"--set takes KEY=VALUE, not {item!r}")
        pairs[key.strip()] = value
    return pairs


@main.command()
@click.argument("ref")
@click.argument("trigger")
@click.option("--note", help="A note for the audit log.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Data for the trigger.")
@json_option
@pass_state
def advance(
    state: State, ref: str, trigger: str, note: str | None, sets: tuple[str, ...], as_json: bool
) -> None:
    """Fire TRIGGER on the entity REF as the acting person.

    \b
    Example:
        pdca --actor staff-kumamoto advance measure:M-001 discontinue --set reason=予算削減
    """
    engine = state.engine()
    actor = state.need_actor()
    data = engine.parse_data(ref, trigger, _parse_sets(state, sets))
    result = engine.fire(ref, trigger, actor=actor, note=note, data=data)
    if as_json:
        emit_json(
            {
                "ref": result.ref,
                "trigger": result.trigger,
                "from": result.from_state,
                "to": result.to_state,
                "seq": result.seq,
                "hash": result.hash,
            }
        )
    else:
        click.echo(f"{result.ref}: {result.from_state} → {result.to_state} (#{result.seq})")


def _entry_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": e.at.isoformat(),
        "actor": e.actor,
        "role": e.role,
        "ref": e.ref,
        "kind": e.kind,
        "trigger": e.trigger,
        "from": e.from_state,
        "to": e.to_state,
        "note": e.note,
        "data": json.loads(e.data),
        "hash": e.hash,
    }


def _tokyo(e: AuditEntry) -> str:
    from zoneinfo import ZoneInfo

    return e.at.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S")


@main.command()
@click.argument("ref")
@json_option
@pass_state
def show(state: State, ref: str, as_json: bool) -> None:
    """The state of REF, what the acting person may fire now, overdue or not, and history.

    \b
    Example:
        pdca --actor staff-kumamoto show measure:M-001
    """
    engine = state.engine()
    view = engine.get(ref, actor=state.actor)
    history = engine.history(ref)
    if as_json:
        emit_json(
            {
                "ref": view.ref,
                "workflow": view.workflow,
                "state": view.state,
                "state_label": view.state_label,
                "version": view.version,
                "scope": list(view.scope),
                "attrs": dict(view.attrs),
                "allowed": list(view.allowed),
                "blocked": {k: list(v) for k, v in view.blocked.items()},
                "overdue": view.overdue,
                "history": [_entry_json(e) for e in history],
            }
        )
        return
    label = engine.registry.get(view.workflow).state_label(view.state, state.lang)
    click.echo(f"{view.ref}  {state.t('状態', 'state')}: {label} ({view.state})")
    if view.overdue:
        click.echo(state.t("期限超過", "OVERDUE"))
    allowed = ", ".join(view.allowed) or "-"
    click.echo(f"{state.t('実行可能な操作', 'allowed now')}: {allowed}")
    for trigger, reasons in view.blocked.items():
        click.echo(f"  {trigger}: {'; '.join(reasons)}")
    click.echo("")
    click.echo(
        table(
            [state.t("番号", "seq"), state.t("日時 (JST)", "time (JST)"),
             state.t("実行者", "actor"), state.t("操作", "trigger"),
             state.t("変更前", "from"), state.t("変更後", "to"), state.t("備考", "note")],
            [[e.seq, _tokyo(e), e.actor, e.trigger if e.kind != "refused" else
              f"{e.trigger} ✗", e.from_state or "", e.to_state or "", e.note or ""]
             for e in history],
        )
    )


@main.group()
def audit() -> None:
    """The auditor's commands: read, verify and checkpoint the audit log."""


@audit.command("log")
@click.option("--ref", help="Only entries of this entity.")
@click.option("--actor", "by_actor", help="Only entries by this actor.")
@click.option("--since", type=click.DateTime(), help="From this time (UTC unless offset).")
@click.option("--until", type=click.DateTime(), help="Before this time.")
@json_option
@pass_state
def audit_log(
    state: State,
    ref: str | None,
    by_actor: str | None,
    since: Any,
    until: Any,
    as_json: bool,
) -> None:
    """The audit log in order (JSON Lines with --json).

    \b
    Example:
        pdca audit log --ref measure:M-001 --json
    """
    from datetime import UTC

    entries = state.engine().audit_log(
        ref=ref,
        actor=by_actor,
        since=since.replace(tzinfo=UTC) if since else None,
        until=until.replace(tzinfo=UTC) if until else None,
    )
    if as_json:
        for e in entries:
            click.echo(json.dumps(_entry_json(e), ensure_ascii=False))
        return
    rows = [
        [e.seq, _tokyo(e), e.actor, e.ref, e.trigger, e.from_state or "", e.to_state or "",
         e.hash[:12]]
        for e in entries
    ]
    click.echo(
        table(
            [state.t("番号", "seq"), state.t("日時 (JST)", "time (JST)"),
             state.t("実行者", "actor"), state.t("対象", "ref"), state.t("操作", "trigger"),
             state.t("変更前", "from"), state.t("変更後", "to"), state.t("ハッシュ", "hash")],
            rows,
        )
    )


@audit.command("verify")
@click.option("--expect", "expect_digest", help="A checkpoint digest kept outside the database.")
@json_option
@pass_state
def audit_verify(state: State, expect_digest: str | None, as_json: bool) -> None:
    """Recompute every hash; name the first entry edited, removed, inserted or reordered.

    Exit status 1 when damage is found.

    \b
    Example:
        pdca audit verify --expect 9d1132420a61...
    """
    report = state.engine().verify_audit(expect_digest=expect_digest)
    if as_json:
        out: dict[str, Any] = {
            "ok": report.ok,
            "entries": report.entries,
            "entities": report.entities,
            "checkpoints": report.checkpoints,
            "last_checkpoint_digest": report.last_checkpoint_digest,
        }
        if report.first_bad is not None:
            out["first_bad"] = report.first_bad.seq
            out["ref"] = report.first_bad.ref
            out["reason"] = report.first_bad.reason
            out["detail"] = report.first_bad.detail
            out["problems"] = [
                {"seq": p.seq, "ref": p.ref, "reason": p.reason, "detail": p.detail}
                for p in report.problems
            ]
        emit_json(out)
    elif report.ok:
        click.echo(
            state.t(
                f"正常: {report.entries} 件の記録を検証しました",
                f"ok: {report.entries} entries verified",
            )
        )
    else:
        for p in report.problems:
            where = f"#{p.seq}" if p.seq is not None else "-"
            click.echo(f"{where} {p.ref or ''} {p.reason}: {p.detail}")
    if not report.ok:
        sys.exit(1)


@audit.command("checkpoint")
@json_option
@pass_state
def audit_checkpoint(state: State, as_json: bool) -> None:
    """Seal the log so far; keep the printed digest outside the database.

    \b
    Example:
        pdca --actor auditor audit checkpoint
    """
    entry = state.engine().checkpoint(actor=state.actor or "scheduler")
    sealed = json.loads(entry.data)
    if as_json:
        emit_json({"seq": entry.seq, **sealed})
    else:
        click.echo(f"#{entry.seq} digest {sealed['digest']} ({sealed['count']} entries)")


@main.command()
@click.argument("workflow")
@pass_state
def diagram(state: State, workflow: str) -> None:
    """Print WORKFLOW as a Mermaid state diagram, generated from its definition.

    \b
    Example:
        pdca diagram measure
    """
    from .workflows import default_registry
    from .workflows.diagram import mermaid

    registry = default_registry()
    if workflow not in registry:
        names = ", ".join(w.name for w in registry)
        state.fail(f"unknown workflow {workflow!r}; the workflows are {names}")
    click.echo(mermaid(registry.get(workflow), lang=state.lang), nl=False)


def _firings_json(report: Any) -> dict[str, Any]:
    return {
        "at": report.at.isoformat(),
        "simulation": report.simulation,
        "done": report.done,
        "skipped": report.skipped,
        "notices_sent": report.notices_sent,
        "notices_queued": report.notices_queued,
        "firings": [
            {"key": f.key, "action": f.action, "due_at": f.due_at.isoformat(), "ref": f.ref,
             "trigger": f.trigger, "status": f.status, "outcome": f.outcome}
            for f in report.firings
        ],
    }


def _simulation_banner(state: State, engine: Engine) -> None:
    if engine.simulation:
        now = engine.now().astimezone(_tz())
        click.echo(state.t(f"【シミュレーション】仮想時刻 {now:%Y-%m-%d %H:%M} JST",
                           f"[SIMULATION] virtual time {now:%Y-%m-%d %H:%M} JST"),
                   err=True)


@main.command()
@click.option("--at", "at", type=Moment(), default=None,
              help="Fire what is due up to this time (never later than now, except in a "
              "simulation database, where it moves the virtual clock).")
@json_option
@pass_state
def tick(state: State, at: Any, as_json: bool) -> None:
    """Fire everything the yearly schedule has made due, once; for cron.

    \b
    Example:
        pdca tick
        pdca tick --at 2026-04-01 --json
    """
    engine = state.engine()
    report = engine.tick(at)
    if as_json:
        emit_json(_firings_json(report))
        return
    _simulation_banner(state, engine)
    for f in report.firings:
        click.echo(f"{f.due_at.astimezone(_tz()):%Y-%m-%d %H:%M}  {f.status:7}  "
                   f"{f.action:9} {f.ref or '-'} {f.trigger or ''}  {f.outcome}")
    click.echo(state.t(
        f"実行 {report.done} 件、対象外 {report.skipped} 件、通知 {report.notices_sent} 件",
        f"{report.done} done, {report.skipped} skipped, {report.notices_sent} notices sent",
    ))


def _tz() -> Any:
    from .calendar import TOKYO

    return TOKYO


@main.command()
@click.option("--until", "until", type=Moment(), required=True, help="Run up to this time.")
@json_option
@pass_state
def simulate(state: State, until: Any, as_json: bool) -> None:
    """Run the yearly schedule on the virtual clock of a simulation database.

    \b
    Example:
        pdca --db sqlite:///training.db simulate --until 2026-04-30
    """
    engine = state.engine()
    show = sys.stderr.isatty() and not as_json

    def progress(moment: Any, fired: int) -> None:
        if show:
            click.echo(f"  {moment.astimezone(_tz()):%Y-%m-%d}  {fired:4} firings", err=True)

    reports = engine.simulate(until, progress=progress)
    if as_json:
        emit_json({"until": until.isoformat(), "simulation": True,
                   "ticks": [_firings_json(r) for r in reports]})
        return
    _simulation_banner(state, engine)
    done = sum(r.done for r in reports)
    click.echo(state.t(f"{len(reports)} 回の実行で {done} 件を処理しました",
                       f"{done} firings in {len(reports)} ticks"))


@main.command()
@click.option("--heartbeat", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Minutes between ticks that retry notices and catch up after an outage.")
@pass_state
def daemon(state: State, heartbeat: float) -> None:
    """Run the scheduler until SIGTERM or SIGINT (for systemd); logs every firing.

    \b
    Example:
        pdca --db postgresql://pdca@db/pdca daemon
    """
    from .scheduler import Daemon

    logging.getLogger("pdca").setLevel(logging.INFO)
    Daemon(state.engine(), heartbeat_minutes=heartbeat).run()


# ----------------------------------------------------------------------------- plan work


def _progress(state: State, label: str) -> Any:
    """Progress on a terminal (stderr) for long work; silent otherwise."""
    if sys.stderr.isatty() and not state.as_json:
        click.echo(label, err=True)


@main.group()
def measures() -> None:
    """Measures (施策・事業): import them from CSV, list them."""


@measures.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
@pass_state
def measures_import(state: State, path: str, as_json: bool) -> None:
    """Import measures from a CSV file, all or nothing.

    Columns: code,municipality,title_ja,title_en,policy_area,kind,priority_project,
    leading,indicator,unit,target (municipality: one code, or several joined by ;).

    \b
    Example:
        pdca --actor secretariat measures import measures.csv
    """
    _progress(state, state.t(f"{path} を取り込んでいます…", f"importing {path}…"))
    result = state.engine().import_measures(path, actor=state.need_actor())
    if as_json:
        emit_json({"created": result.created})
    else:
        click.echo(state.t(f"{result.created} 件の施策を登録しました",
                           f"{result.created} measures imported"))


@measures.command("list")
@click.option("--municipality", help="Only this municipality's measures (6-digit code).")
@click.option("--state", "state_code", help="Only measures in this state.")
@json_option
@pass_state
def measures_list(
    state: State, municipality: str | None, state_code: str | None, as_json: bool
) -> None:
    """The measures, with their state.

    \b
    Example:
        pdca measures list --municipality 431001 --state study
    """
    engine = state.engine()
    found = engine.entities(workflow="measure", municipality=municipality, state=state_code)
    if as_json:
        emit_json([{"ref": v.ref, "code": v.ref.split(":", 1)[1], "state": v.state,
                    "municipalities": list(v.scope), **dict(v.attrs)} for v in found])
        return
    wf = engine.registry.get("measure")
    click.echo(table(
        [state.t("コード", "code"), state.t("市町村", "municipality"),
         state.t("名称", "title"), state.t("状態", "state"),
         state.t("重点事業", "priority project")],
        [[v.ref.split(":", 1)[1], ";".join(v.scope),
          v.attrs.get("title_ja" if state.lang == "ja" else "title_en")
          or v.attrs.get("title_ja", ""),
          wf.state_label(v.state, state.lang), v.attrs.get("priority_project", "")]
         for v in found],
    ))


@main.command()
@click.argument("ref")
@click.option("--fy", "fiscal_year", type=YEAR, required=True, help="The fiscal year evaluated.")
@click.option("--rating", required=True, help="A rating of the plan's scale (e.g. A-D).")
@click.option("--actual", type=float, default=None, help="The indicator's actual value.")
@click.option("--comment", default="", help="A comment.")
@json_option
@pass_state
def evaluate(
    state: State,
    ref: str,
    fiscal_year: int,
    rating: str,
    actual: float | None,
    comment: str,
    as_json: bool,
) -> None:
    """Record the evaluation of a measure (its municipality's staff) or of a priority
    project, ``priority:ID`` (the secretariat), for one fiscal year.

    \b
    Example:
        pdca --actor staff-kumamoto evaluate measure:M-001 --fy 2025 --rating B --actual 12
        pdca --actor secretariat evaluate priority:priority-1 --fy 2025 --rating B
    """
    engine = state.engine()
    if ref.startswith("priority:"):
        if actual is not None:
            state.fail("--actual is for measures, not priority projects", code="usage")
        result = engine.evaluate_priority_project(
            ref.split(":", 1)[1], fiscal_year=fiscal_year, rating=rating, comment=comment,
            actor=state.need_actor())
    else:
        result = engine.evaluate(ref, fiscal_year=fiscal_year, rating=rating, actual=actual,
                                 comment=comment, actor=state.need_actor())
    if as_json:
        emit_json({"ref": result.ref, "seq": result.seq, "data": dict(result.data)})
    else:
        click.echo(state.t(f"{ref}: {fiscal_year}年度の評価 {rating} を記録しました",
                           f"{ref}: FY{fiscal_year} evaluated {rating}"))


@main.group()
def emissions() -> None:
    """The emissions ledger: import values, show totals and reductions."""


@emissions.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
@pass_state
def emissions_import(state: State, path: str, as_json: bool) -> None:
    """Import emission values from CSV, all or nothing.

    Columns: municipality,year,sector,value_t_co2,status (preliminary, estimated, final).

    \b
    Example:
        pdca --actor secretariat emissions import emissions-2024.csv
    """
    _progress(state, state.t(f"{path} を取り込んでいます…", f"importing {path}…"))
    result = state.engine().import_emissions(path, actor=state.need_actor())
    if as_json:
        emit_json({"created": result.created, "changed": result.changed,
                   "unchanged": result.unchanged})
    else:
        click.echo(state.t(
            f"新規 {result.created} 件、更新 {result.changed} 件、変更なし {result.unchanged} 件",
            f"{result.created} created, {result.changed} changed, "
            f"{result.unchanged} unchanged"))


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


@emissions.command("show")
@click.option("--fy", "fiscal_year", type=YEAR, default=None,
              help="The fiscal year under review: shows the inventory year its check "
              "calculates (the plan's statistics lag).")
@click.option("--year", type=YEAR, default=None, help="An inventory year, directly.")
@click.option("--municipality", help="Also each sector of this municipality.")
@json_option
@pass_state
def emissions_show(
    state: State,
    fiscal_year: int | None,
    year: int | None,
    municipality: str | None,
    as_json: bool,
) -> None:
    """Region totals over that year's members, reduction against the base year (of the
    same members) and the target path; missing values shown as missing.

    \b
    Example:
        pdca emissions show --fy 2025
    """
    engine = state.engine()
    plan = engine.plan
    if (fiscal_year is None) == (year is None):
        state.fail("give --fy FY (the year under review) or --year YEAR (an inventory year)",
                   code="usage")
    inventory = year if year is not None else plan.inventory_year(int(fiscal_year or 0))
    totals = engine.region_emissions(inventory)
    values = {(v.municipality, v.sector): v for v in engine.emission_values(years=[inventory])}
    if municipality is not None:
        plan.member(municipality)
    data: dict[str, Any] = {
        "inventory_year": inventory,
        "fiscal_year": fiscal_year,
        "members": list(totals.members),
        "total_t_co2": totals.total,
        "base_year": totals.base_year,
        "base_total_t_co2": totals.base_total,
        "reduction": totals.reduction,
        "target_reduction": totals.target_reduction,
        "target_total_t_co2": totals.target_total,
        "by_sector": dict(totals.by_sector),
        "by_member": dict(totals.by_member),
        "missing": [list(m) for m in totals.missing],
        "statuses": dict(totals.statuses),
        "simulation": engine.simulation,
    }
    if municipality is not None:
        data["municipality"] = {
            s: (None if (municipality, s) not in values else
                {"value_t_co2": values[(municipality, s)].value_t_co2,
                 "status": values[(municipality, s)].status})
            for s in plan.sector_ids
        }
    if as_json:
        emit_json(data)
        return
    click.echo(state.t(f"{inventory}年度の排出量（{len(totals.members)} 市町村）",
                       f"Emissions of {inventory} ({len(totals.members)} members)"))
    click.echo(table(
        [state.t("項目", "item"), state.t("値", "value")],
        [[state.t("合計 (t-CO2)", "total (t-CO2)"), _fmt(totals.total)],
         [state.t(f"基準年度 {totals.base_year} (同じ市町村)",
                  f"base year {totals.base_year} (same members)"), _fmt(totals.base_total)],
         [state.t("削減率", "reduction"), pct(totals.reduction)],
         [state.t("目標削減率", "target reduction"), pct(totals.target_reduction)],
         [state.t("目標排出量 (t-CO2)", "target (t-CO2)"), _fmt(totals.target_total)]],
    ))
    if totals.missing:
        click.echo(state.t(f"未入力 {len(totals.missing)} 件（合計は欠測）",
                           f"{len(totals.missing)} values missing (total is missing)"))
    if municipality is not None:
        click.echo("")
        rows = []
        for sector in plan.sector_ids:
            v = values.get((municipality, sector))
            rows.append([sector, _fmt(v.value_t_co2 if v else None), v.status if v else "—"])
        click.echo(table([state.t("部門", "sector"), "t-CO2", state.t("状態", "status")], rows))


@main.group()
def meetings() -> None:
    """Meetings: liaison council, advisory committee, staff meeting, policy meeting."""


@meetings.command("schedule")
@click.argument("kind", type=click.Choice(
    ["liaison_council", "advisory_committee", "staff_meeting", "policy_meeting"]))
@click.option("--fy", "fiscal_year", type=YEAR, required=True, help="The fiscal year.")
@click.option("--date", "on", required=True, help="The date, YYYY-MM-DD.")
@click.option("--municipality", help="For a policy meeting: its municipality.")
@click.option("--title", help="A title.")
@pass_state
def meetings_schedule(
    state: State,
    kind: str,
    fiscal_year: int,
    on: str,
    municipality: str | None,
    title: str | None,
) -> None:
    """Plan a meeting; prints its new reference.

    \b
    Example:
        pdca --actor secretariat meetings schedule liaison_council --fy 2025 --date 2026-12-10
    """
    ref = state.engine().schedule_meeting(kind, fiscal_year=fiscal_year, on=on,
                                          municipality=municipality, title=title,
                                          actor=state.need_actor())
    click.echo(ref)


@meetings.command("list")
@click.option("--fy", "fiscal_year", type=YEAR, default=None, help="Only this fiscal year.")
@json_option
@pass_state
def meetings_list(state: State, fiscal_year: int | None, as_json: bool) -> None:
    """The meetings, with their date and state.

    \b
    Example:
        pdca meetings list --fy 2025
    """
    from .workflows.meeting import MEETING_LABELS

    engine = state.engine()
    found = engine.entities(workflow="meeting", fiscal_year=fiscal_year)
    if as_json:
        emit_json([{"ref": v.ref, "state": v.state, **dict(v.attrs)} for v in found])
        return
    wf = engine.registry.get("meeting")
    click.echo(table(
        [state.t("参照", "ref"), state.t("会議", "meeting"), state.t("日付", "date"),
         state.t("状態", "state")],
        [[v.ref, MEETING_LABELS[v.attrs["kind"]][0 if state.lang == "ja" else 1],
          v.attrs.get("held_on") or v.attrs.get("date"), wf.state_label(v.state, state.lang)]
         for v in found],
    ))


@main.group()
def advice() -> None:
    """Advice (助言) of the advisory committee, and what was done about it."""


@advice.command("add")
@click.argument("meeting")
@click.argument("text")
@click.option("--member", help="Who gave the advice.")
@pass_state
def advice_add(state: State, meeting: str, text: str, member: str | None) -> None:
    """Record advice given at a held advisory committee; prints its reference.

    \b
    Example:
        pdca --actor clerk advice add meeting:2025-advisory_committee-1 "家庭部門の対策を強化"
    """
    click.echo(state.engine().add_advice(meeting, text, member=member,
                                         actor=state.need_actor()))


@advice.command("answer")
@click.argument("ref")
@click.argument("text")
@pass_state
def advice_answer(state: State, ref: str, text: str) -> None:
    """Record what was done about a piece of advice.

    \b
    Example:
        pdca --actor secretariat advice answer advice:2025-1 "令和8年度の施策に反映"
    """
    result = state.engine().fire(ref, "answer", actor=state.need_actor(),
                                 data={"answer": text})
    click.echo(f"{result.ref}: {result.from_state} → {result.to_state}")


@main.command()
@click.option("--fy", "fiscal_year", type=YEAR, default=None,
              help="The fiscal year (default: the one whose check is under way).")
@click.option("--municipality", help="Only this municipality.")
@json_option
@pass_state
def status(state: State, fiscal_year: int | None, municipality: str | None,
           as_json: bool) -> None:
    """The dashboard: every member's cycle phase and overdue flag, the region's phase,
    the measures by state.

    \b
    Example:
        pdca status --fy 2025
    """
    engine = state.engine()
    data = engine.status(fiscal_year, municipality=municipality)
    if as_json:
        emit_json(data)
        return
    _simulation_banner(state, engine)
    fy = data["fiscal_year"]
    wf = engine.registry.get("municipal_cycle")
    rwf = engine.registry.get("regional_cycle")
    region = data["region"]
    click.echo(state.t(f"{fy}年度（{wareki_label(fy)}）の進捗", f"Progress of FY{fy}"))
    click.echo(state.t("圏域: ", "region: ")
               + (rwf.state_label(region["state"], state.lang) if region["state"] else "—")
               + (state.t("  期限超過", "  OVERDUE") if region["overdue"] else ""))
    click.echo("")
    click.echo(table(
        [state.t("コード", "code"), state.t("市町村", "municipality"),
         state.t("段階", "phase"), state.t("期限超過", "overdue")],
        [[m["code"], m["name"] if state.lang == "ja" else m["name_en"],
          wf.state_label(m["state"], state.lang) if m["state"] else "—",
          "!" if m["overdue"] else ""] for m in data["municipalities"]],
    ))
    click.echo("")
    mwf = engine.registry.get("measure")
    counts = ", ".join(f"{mwf.state_label(k, state.lang)} {v}"
                       for k, v in sorted(data["measures"].items()))
    click.echo(state.t("施策: ", "measures: ") + (counts or "—"))


def wareki_label(fy: int) -> str:
    from .calendar import wareki

    try:
        return wareki(fy)
    except Exception:  # a year before the eras the calendar names
        return f"{fy}年度"


@main.group()
def schedule() -> None:
    """The yearly schedule (図表7-4) of the plan."""


@schedule.command("show")
@click.option("--fy", "fiscal_year", type=YEAR, default=None,
              help="The fiscal year whose check it is (default: the current year's).")
@json_option
@pass_state
def schedule_show(state: State, fiscal_year: int | None, as_json: bool) -> None:
    """The schedule with the real dates of a fiscal year's check.

    \b
    Example:
        pdca schedule show --fy 2025
    """
    from .calendar import fiscal_year_of

    engine = state.engine()
    fy = fiscal_year if fiscal_year is not None else fiscal_year_of(engine.now()) - 1
    steps = engine.schedule_of(fy)
    if as_json:
        emit_json({"fiscal_year": fy, "steps": steps})
        return
    click.echo(state.t(f"{fy}年度の点検の日程", f"Schedule of the check of FY{fy}"))
    click.echo(table(
        [state.t("手順", "step"), state.t("担当", "who"), state.t("内容", "what"),
         state.t("開始", "opens"), state.t("期限", "due")],
        [[s["step"], s["actor"], s["title_ja"] if state.lang == "ja" else s["title_en"],
          s["opens"], s["due"]] for s in steps],
    ))


@main.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="pdca-demo",
              show_default=True, help="Where to build the demo (its database is replaced).")
@pass_state
def demo(state: State, directory: str) -> None:
    """Build a simulation database with the Kumamoto plan and SAMPLE data, play FY2025.

    Ends with the status of the year and where the files are. Takes a few seconds.

    \\b
    Example:
        pdca demo --dir /tmp/pdca-demo
    """
    from pathlib import Path

    from .demo import run_demo

    def say(text: str) -> None:
        click.echo(f"… {text}", err=True)

    result = run_demo(Path(directory), say=say)
    click.echo(state.t("【サンプルデータによるシミュレーション】",
                       "[SIMULATION WITH SAMPLE DATA]"))
    state.db = result.url
    state.close()
    ctx = click.get_current_context()
    ctx.invoke(status, fiscal_year=result.fiscal_year, municipality=None, as_json=False)
    click.echo("")
    click.echo(state.t(
        f"データベース: {result.url}（監査ログ {result.audit_entries} 件、検証 "
        f"{'正常' if result.verified else '異常'}）",
        f"database: {result.url} ({result.audit_entries} audit entries, verified: "
        f"{result.verified})"))
    click.echo(state.t(f"公表資料: {result.report}", f"publication: {result.report}"))
    click.echo(state.t(f"続けて: pdca --db {result.url} status",
                       f"next: pdca --db {result.url} status"))


def reference_markdown() -> str:
    """The command reference of docs/cli.md, generated from the commands themselves."""
    ctx = click.Context(main, info_name="pdca")
    out: list[str] = []

    def walk(command: click.Command, path: list[str], parent: click.Context) -> None:
        sub = click.Context(command, info_name=path[-1], parent=parent)
        if isinstance(command, click.Group):
            for name in sorted(command.commands):
                walk(command.commands[name], [*path, name], sub)
            return
        out.append(f"### `{' '.join(path)}`\n")
        out.append("```text\n" + command.get_usage(sub).strip() + "\n```\n")
        help_text = "\n".join(
            line.rstrip() for line in (command.help or "").replace("\b", "").splitlines()
        ).strip()
        body, _, example = help_text.partition("Example:")
        out.append(re.sub(r"\n{3,}", "\n\n", body.strip()) + "\n")
        if example.strip():
            lines = [line.strip() for line in example.strip().splitlines()]
            out.append("Example:\n\n```sh\n" + "\n".join(lines) + "\n```\n")
        rows = []
        for param in command.get_params(sub):
            record = param.get_help_record(sub)
            if isinstance(param, click.Option) and record and "--help" not in record[0]:
                rows.append(f"| `{record[0]}` | {record[1].replace('|', '/')} |")
        if rows:
            out.append("| option | meaning |\n|---|---|\n" + "\n".join(rows) + "\n")

    for name in sorted(main.commands):
        walk(main.commands[name], ["pdca", name], ctx)
    return "\n".join(out)


@main.group(invoke_without_command=True)
@click.option("--fy", "fiscal_year", type=YEAR, help="The fiscal year to publish.")
@click.option("--out", "out", type=click.Path(file_okay=False), help="The folder to write to.")
@click.option("--publish", "do_publish", is_flag=True,
              help="Also publish it: fire the region's publish with the page's SHA-256.")
@click.option("--url", help="With --publish: where the page is published.")
@json_option
@click.pass_context
def report(
    ctx: click.Context,
    fiscal_year: int | None,
    out: str | None,
    do_publish: bool,
    url: str | None,
    as_json: bool,
) -> None:
    """The publication for residents: one self-contained HTML page of a fiscal year.

    \b
    Example:
        pdca report --fy 2025 --out site/
        pdca --actor secretariat report --fy 2025 --out site/ --publish
    """
    if ctx.invoked_subcommand is not None:
        return
    state = ctx.find_object(State)
    assert state is not None
    if fiscal_year is None or out is None:
        state.fail("give --fy FY and --out DIR (or: pdca report verify FILE)", code="usage")
    from .reporting import build_report, publish_report

    engine = state.engine()
    if do_publish:
        built, transition = publish_report(engine, fiscal_year, out, actor=state.need_actor(),
                                           lang=state.lang, url=url)
        seq: int | None = transition.seq
    else:
        built, seq = build_report(engine, fiscal_year, out, lang=state.lang), None
    if as_json:
        emit_json({"path": str(built.path), "sha256": built.sha256, "lang": built.lang,
                   "published_seq": seq, "simulation": engine.simulation})
        return
    click.echo(str(built.path))
    click.echo(f"sha256 {built.sha256}")
    if seq is not None:
        click.echo(state.t(f"公表しました（監査ログ #{seq}）", f"published (audit entry #{seq})"))


@report.command("verify")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
@pass_state
def report_verify(state: State, path: str, as_json: bool) -> None:
    """Tell whether a file is exactly a page that was published; exit 1 if not.

    \b
    Example:
        pdca report verify site/report-2025-ja.html
    """
    from .reporting import verify_report

    result = verify_report(state.engine(), path)
    if as_json:
        emit_json({"path": str(result.path), "sha256": result.sha256,
                   "published": result.published, "fiscal_year": result.fiscal_year,
                   "seq": result.seq})
    elif result.published:
        click.echo(state.t(
            f"一致: {result.fiscal_year}年度の公表資料です（監査ログ #{result.seq}）",
            f"match: this is the page published for FY{result.fiscal_year} "
            f"(audit entry #{result.seq})"))
    else:
        click.echo(state.t("不一致: 公表された資料と一致しません",
                           "no match: this file is not a published page"))
    if not result.published:
        sys.exit(1)


@main.command("export")
@click.option("--fy", "fiscal_year", type=YEAR, required=True, help="The fiscal year.")
@click.option("--format", "fmt", type=click.Choice(["xlsx", "csv"]), default="xlsx",
              show_default=True, help="One XLSX file, or a folder of CSV files.")
@click.option("--out", "out", type=click.Path(), required=True, help="The file or folder.")
@json_option
@pass_state
def export(state: State, fiscal_year: int, fmt: str, out: str, as_json: bool) -> None:
    """Measures, evaluations, emissions, cycle status and an audit extract for staff.

    \b
    Example:
        pdca export --fy 2025 --format xlsx --out 令和7年度.xlsx
    """
    from .reporting import export_year

    paths = export_year(state.engine(), fiscal_year, out, fmt=fmt)
    if as_json:
        emit_json({"files": [str(p) for p in paths]})
    else:
        for path in paths:
            click.echo(str(path))
