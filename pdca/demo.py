"""``pdca demo``: one fiscal year of the Kumamoto plan, played on a simulation database.

Everything goes through the engine, as staff and the scheduler would do it: the plan is
loaded, **sample** measures and emissions are imported (labelled as sample data in the
data itself), and FY2025 is carried out — the year opens on 1 April 2025, the check runs
from April 2026, one municipality is late with its emissions and is marked overdue, the
region aggregates, the liaison council and the advisory committee meet, advice is given
and answered, the results are published and every cycle is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .calendar import start_of_day
from .engine import Engine
from .errors import InvalidInput
from .notify import LogNotifier
from .reporting import build_report, publish_report

FY = 2025
SAMPLE = "【サンプル】"
LATE = "434477"  # 山都町 submits its emissions after the deadline, to show overdue

AREAS = ("renewable_energy", "energy_saving", "urban_circulation", "nature", "awareness")
MEASURES = (
    ("公共施設への太陽光発電設備の導入", "Solar power on public buildings", "study"),
    ("住宅用省エネ設備の導入支援", "Support for household energy saving", "implementation"),
    ("公共交通の利用促進", "Promoting public transport", "implementation"),
    ("森林の保全と整備", "Forest conservation", "implementation"),
    ("環境学習の推進", "Environmental education", "study"),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class DemoResult:
    directory: Path
    url: str
    fiscal_year: int
    audit_entries: int
    verified: bool
    report: Path


def _day(y: int, m: int, d: int) -> datetime:
    return start_of_day(datetime(y, m, d).date()).astimezone(UTC)


def _write_measures(path: Path, members: list[str]) -> None:
    lines = ["code,municipality,title_ja,title_en,policy_area,kind,priority_project,leading,"
             "indicator,unit,target"]
    for i, code in enumerate(members):
        for j in range(2):
            title_ja, title_en, kind = MEASURES[(i + j) % len(MEASURES)]
            lines.append(
                f"S{code}-{j + 1},{code},{SAMPLE}{title_ja},[SAMPLE] {title_en},"
                f"{AREAS[(i + j) % len(AREAS)]},{kind},priority-{1 + (i + j) % 4},"
                f"{'true' if i == 0 and j == 0 else 'false'},実施件数,件,{10 * (j + 1)}")
    lines.append(f"S-JOINT,{';'.join(members[:3])},{SAMPLE}圏域共同の啓発キャンペーン,"
                 "[SAMPLE] Joint awareness campaign,awareness,implementation,priority-4,"
                 "true,参加者数,人,5000")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_emissions(path: Path, engine: Engine) -> None:
    plan = engine.plan
    lines = ["municipality,year,sector,value_t_co2,status"]
    for n, member in enumerate(plan.members):
        size = 3000 if member.code == "431001" else 300 + 37 * n
        for k, sector in enumerate(plan.sector_ids):
            base = size * (10 - k) * 10
            for year, factor, status in ((2013, 1.0, "final"), (2019, 0.86, "final"),
                                         (2022, 0.80, "estimated"), (2024, 0.76, "preliminary")):
                lines.append(f"{member.code},{year},{sector},{round(base * factor, 1)},{status}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_demo(directory: Path, *, say: Callable[[str], None] = lambda text: None) -> DemoResult:
    """Build ``directory/demo.db`` and play FY2025 in it; ``say`` narrates each stage."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create {directory}: {exc.strerror or exc}",
                           field="dir") from None
    db = directory / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    notices = LogNotifier()
    engine = Engine.create_simulation(url, start=_day(2025, 3, 1))
    try:
        say("plan, people and sample data / 計画・利用者・サンプルデータ")
        engine.bootstrap_admin("admin", name="管理者")
        plan = engine.load_plan("kumamoto", actor="admin")
        members = [m.code for m in plan.members_of(FY)]
        engine.add_person("secretariat", role="secretariat", name="事務局",
                          email="secretariat@example.jp", actor="admin")
        engine.add_person("clerk", role="clerk", name="委員会書記", actor="admin")
        engine.add_person("auditor", role="auditor", name="監査担当", actor="admin")
        for code in members:
            engine.add_person(f"staff-{code}", role="staff", municipality=code,
                              email=f"staff-{code}@example.jp", actor="admin")
        _write_measures(directory / "sample-measures.csv", members)
        engine.import_measures(directory / "sample-measures.csv", actor="secretariat")
        _write_emissions(directory / "sample-emissions.csv", engine)
        engine.import_emissions(directory / "sample-emissions.csv", actor="secretariat")

        say("FY2025 runs (April 2025 - March 2026) / 令和7年度の実行")
        engine.simulate(_day(2025, 7, 1), notifier=notices)
        engine.fire(f"measure:S{members[0]}-1", "commercialise", actor=f"staff-{members[0]}",
                    data={"fiscal_year": FY, "budget_jpy": 30_000_000},
                    note="令和7年度予算で事業化")
        project = engine.propose_project(f"{SAMPLE}EVカーシェア共同検討", fiscal_year=FY,
                                         actor="secretariat",
                                         meeting=f"meeting:{FY}-staff_meeting-1")
        engine.fire(project, "launch", actor="secretariat")

        say("the check of FY2025 (from April 2026) / 令和7年度の点検")
        engine.simulate(_day(2026, 5, 15), notifier=notices)
        for code in members:
            engine.fire(f"cycle:{code}:{FY}", "confirm_status", actor=f"staff-{code}")
        engine.simulate(_day(2026, 7, 20), notifier=notices)
        for code in members:
            if code != LATE:
                engine.fire(f"cycle:{code}:{FY}", "submit_emissions", actor=f"staff-{code}")
        engine.simulate(_day(2026, 10, 2), notifier=notices)  # 山都町 is now overdue
        engine.fire(f"cycle:{LATE}:{FY}", "submit_emissions", actor=f"staff-{LATE}",
                    note="算定が遅れたため期限後に提出")
        for code in members:
            for measure in engine.entities(workflow="measure", municipality=code):
                engine.evaluate(measure.ref, fiscal_year=FY, rating="B", actual=5,
                                comment="サンプルの評価", actor=f"staff-{code}")
            engine.fire(f"cycle:{code}:{FY}", "finish_evaluation", actor=f"staff-{code}")
        engine.simulate(_day(2026, 10, 20), notifier=notices)
        for code in members:
            engine.fire(f"cycle:{code}:{FY}", "report_internally", actor=f"staff-{code}")

        say("the region: aggregation, council, committee, publication / 圏域の点検と公表")
        engine.simulate(_day(2026, 11, 10), notifier=notices)
        region = f"cycle:region:{FY}"
        for p in plan.priority_projects:
            engine.evaluate_priority_project(p.id, fiscal_year=FY, rating="B",
                                             comment="サンプルの評価", actor="secretariat")
        engine.fire(region, "aggregate", actor="secretariat")
        council = engine.schedule_meeting("liaison_council", fiscal_year=FY, on="2026-12-10",
                                          actor="secretariat")
        committee = engine.schedule_meeting("advisory_committee", fiscal_year=FY,
                                            on="2027-01-20", actor="clerk")
        engine.simulate(_day(2026, 12, 10), notifier=notices)
        engine.fire(council, "hold", actor="secretariat")
        engine.fire(council, "record_minutes", actor="secretariat",
                    data={"minutes": f"{SAMPLE}圏域全体の進捗と排出量を確認した"})
        engine.fire(region, "hold_liaison_council", actor="secretariat")
        engine.simulate(_day(2027, 1, 20), notifier=notices)
        engine.fire(committee, "hold", actor="clerk")
        advice = [
            engine.add_advice(committee, f"{SAMPLE}家庭部門の削減対策を強化すること",
                              member="学識経験者", actor="clerk"),
            engine.add_advice(committee, f"{SAMPLE}市民に分かりやすい公表を工夫すること",
                              member="市民代表", actor="clerk"),
        ]
        engine.fire(region, "hold_advisory_committee", actor="secretariat")
        engine.simulate(_day(2027, 2, 20), notifier=notices)
        report, _ = publish_report(engine, FY, directory, actor="secretariat")
        build_report(engine, FY, directory, lang="en")
        engine.fire(region, "begin_act", actor="secretariat")
        for ref in advice:
            engine.fire(ref, "answer", actor="secretariat",
                        data={"answer": f"{SAMPLE}令和8年度の施策に反映した"})
        engine.fire(region, "close", actor="secretariat")
        engine.simulate(_day(2027, 3, 10), notifier=notices)
        for code in members:
            engine.fire(f"cycle:{code}:{FY}", "close", actor=f"staff-{code}",
                        data={"revisions": f"{SAMPLE}助言を踏まえて啓発を強化"})
        engine.checkpoint(actor="auditor")
        verified = engine.verify_audit()
        return DemoResult(directory=directory, url=url, fiscal_year=FY,
                          audit_entries=verified.entries, verified=verified.ok,
                          report=report.path)
    finally:
        engine.close()
