"""Exports for staff: one sheet (or CSV file) each, with Japanese headers.

Measures, evaluations, emissions, cycle status and an audit extract of one fiscal year.
XLSX is written with openpyxl; CSV files are UTF-8 with a byte-order mark so that Excel
opens them with the Japanese intact.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..engine import Engine

Sheet = tuple[str, str, list[str], list[list[Any]]]  # (title, file stem, headers, rows)


def _sheets(engine: Engine, fiscal_year: int) -> list[Sheet]:
    plan = engine.plan
    inventory = plan.inventory_year(fiscal_year)
    measure_wf = engine.registry.get("measure")
    measures = engine.entities(workflow="measure")
    measure_rows = [
        [v.ref.split(":", 1)[1], ";".join(v.scope), v.attrs.get("title_ja", ""),
         v.attrs.get("title_en", ""), v.attrs.get("policy_area", ""),
         measure_wf.state_label(v.state), v.state, v.attrs.get("priority_project", ""),
         bool(v.attrs.get("leading", False)), v.attrs.get("indicator", ""),
         v.attrs.get("unit", ""), v.attrs.get("target")]
        for v in measures
    ]
    evaluation_rows = [
        [e.measure.split(":", 1)[1], e.fiscal_year, e.rating, e.actual, e.comment,
         e.recorded_by]
        for e in engine.evaluations(fiscal_year=fiscal_year)
    ]
    emission_rows = [
        [v.municipality, plan.member(v.municipality).name_ja, v.year, v.sector,
         v.value_t_co2, v.status]
        for v in sorted(engine.emission_values(years=[plan.base_year, inventory]),
                        key=lambda v: (v.year, v.municipality, v.sector))
    ]
    status = engine.status(fiscal_year)
    cycle_rows = [["region", "圏域", status["region"]["state_label"] or "",
                   status["region"]["state"] or "", status["region"]["overdue"]]]
    cycle_rows += [[m["code"], m["name"], m["state_label"] or "", m["state"] or "",
                    m["overdue"]] for m in status["municipalities"]]
    audit_rows = [
        [e.seq, e.at.isoformat(), e.virtual_at.isoformat() if e.virtual_at else "",
         e.actor, e.role, e.ref, e.kind, e.trigger, e.from_state or "", e.to_state or "",
         e.note or "", e.hash]
        for e in engine.audit_log()
        if e.fiscal_year in (fiscal_year, inventory) or (e.ref.startswith("cycle:")
        and e.ref.endswith(f":{fiscal_year}"))
    ]
    return [
        ("施策", "measures",
         ["コード", "市町村", "名称", "名称（英語）", "施策分野", "状態", "状態コード",
          "重点事業", "先導的事業", "指標", "単位", "目標値"], measure_rows),
        ("評価", "evaluations",
         ["施策コード", "年度", "評価", "実績値", "コメント", "記録者"], evaluation_rows),
        ("排出量", "emissions",
         ["市町村コード", "市町村", "年度", "部門", "排出量(t-CO2)", "数値の段階"],
         emission_rows),
        ("進捗状況", "cycles",
         ["コード", "市町村", "段階", "段階コード", "期限超過"], cycle_rows),
        ("監査ログ", "audit",
         ["番号", "日時(UTC)", "仮想時刻", "実行者", "役割", "対象", "種別", "操作",
          "変更前", "変更後", "備考", "ハッシュ"], audit_rows),
    ]


def export_year(engine: Engine, fiscal_year: int, out: str | Path, *,
                fmt: str = "xlsx") -> list[Path]:
    """Write the exports of ``fiscal_year``: one XLSX file, or a folder of CSV files."""
    if fmt not in ("xlsx", "csv"):
        raise InvalidInput(f"unknown format {fmt!r}; use xlsx or csv", field="format")
    if not engine.cycles(fiscal_year):
        raise InvalidInput(f"FY{fiscal_year} has no data: its cycles were never opened",
                           field="fy")
    sheets = _sheets(engine, fiscal_year)
    target = Path(out)
    if fmt == "xlsx" and (not target.name or target.is_dir()):
        target = target / f"pdca-{fiscal_year}.xlsx"  # a folder: a file in it
    try:
        if fmt == "xlsx":
            return [_write_xlsx(target, sheets)]
        target.mkdir(parents=True, exist_ok=True)
        return [_write_csv(target / f"{stem}-{fiscal_year}.csv", headers, rows)
                for _, stem, headers, rows in sheets]
    except OSError as exc:
        raise InvalidInput(f"cannot write {target}: {exc.strerror}", field="out") from None


def _write_csv(path: Path, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    return path


def _write_xlsx(path: Path, sheets: Sequence[Sheet]) -> Path:
    from openpyxl import Workbook
    from openpyxl.styles import Font, PatternFill

    if path.suffix.lower() != ".xlsx":
        path = path.with_suffix(".xlsx")
    path.parent.mkdir(parents=True, exist_ok=True)
    book = Workbook()
    book.remove(book.active)  # the default sheet: ours are created below
    for title, _, headers, rows in sheets:
        sheet = book.create_sheet(title)
        sheet.append(list(headers))
        for cell in sheet[1]:
            cell.font = Font(bold=True)
            cell.fill = PatternFill("solid", fgColor="EEF4F0")
        for row in rows:
            sheet.append(list(row))
        sheet.freeze_panes = "A2"
        for column in sheet.columns:
            width = max(len(str(c.value or "")) for c in column)
            sheet.column_dimensions[column[0].column_letter].width = min(max(width + 2, 8), 60)
    book.save(path)
    return path
