"""The numbers of a fiscal year's publication, gathered through the engine.

:func:`report_data` returns plain JSON-able data; the HTML page and its charts are built
from it alone, so the data stored with the ``publish`` transition is exactly what the page
shows.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..calendar import TOKYO, fiscal_year_of, wareki
from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..engine import Engine

#: Regional states from which a year's figures are aggregated and may be published.
AGGREGATED = ("check_aggregated", "council_held", "committee_held", "published", "act", "closed")


def _business_time(entry_at: datetime, virtual_at: datetime | None) -> datetime:
    return virtual_at or entry_at


def report_data(engine: Engine, fiscal_year: int) -> dict[str, Any]:
    """Everything the publication of ``fiscal_year`` shows, as plain data.

    Refuses, saying what is missing, a year with no cycles or not yet aggregated.
    """
    plan = engine.plan
    region = [v for v in engine.cycles(fiscal_year) if v.workflow == "regional_cycle"]
    if not region:
        raise InvalidInput(
            f"FY{fiscal_year} has no data: its cycles were never opened (pdca tick opens a "
            "fiscal year on 1 April)", field="fy")
    if region[0].state not in AGGREGATED:
        status = engine.status(fiscal_year)
        waiting = [f"{m['name']} ({m['code']})" for m in status["municipalities"]
                   if m["state"] not in ("act", "closed")]
        detail = (f"; members without their internal report: {', '.join(waiting)}"
                  if waiting else "")
        raise InvalidInput(
            f"FY{fiscal_year} is not aggregated yet: the regional cycle is "
            f"{region[0].state}{detail}", field="fy")

    inventory = plan.inventory_year(fiscal_year)
    latest = engine.region_emissions(inventory)
    base_statuses: dict[str, int] = {}
    for value in engine.emission_values(years=[plan.base_year]):
        if value.municipality in latest.members:
            base_statuses[value.status] = base_statuses.get(value.status, 0) + 1
    years = sorted({v.year for v in engine.emission_values()} | {plan.base_year, inventory})
    series: list[dict[str, Any]] = [{
        # The base year, over the members of the latest year (members of the base year
        # itself may be none: the plan may be younger than its base year).
        "year": plan.base_year, "total": latest.base_total, "base_total": latest.base_total,
        "reduction": 0.0 if latest.base_total else None, "target_reduction": 0.0,
        "target_total": latest.base_total, "members": len(latest.members),
        "missing": len(latest.base_missing), "statuses": base_statuses,
    }]
    for year in years:
        if year > inventory or year <= plan.base_year:
            continue
        totals = engine.region_emissions(year)
        series.append({
            "year": year,
            "total": totals.total,
            "base_total": totals.base_total,
            "reduction": totals.reduction,
            "target_reduction": totals.target_reduction,
            "target_total": totals.target_total,
            "members": len(totals.members),
            "missing": len(totals.missing),
            "statuses": dict(totals.statuses),
        })
    sectors = [
        {"id": s.id, "name_ja": s.name_ja, "name_en": s.name_en,
         "value": latest.by_sector.get(s.id)}
        for s in plan.sectors
    ]

    cycles = {v.ref: v for v in engine.cycles(fiscal_year)}
    mwf = engine.registry.get("municipal_cycle")
    measures = engine.entities(workflow="measure")
    by_ref = {m.ref: m for m in measures}
    commercialised: dict[str, list[dict[str, str]]] = {}
    for entry in engine.audit_log(trigger="commercialise", kind="transition"):
        when = _business_time(entry.at, entry.virtual_at)
        if fiscal_year_of(when) == fiscal_year:
            view = by_ref.get(entry.ref)
            if view is not None:
                for code in view.scope:
                    commercialised.setdefault(code, []).append({
                        "ja": str(view.attrs.get("title_ja") or entry.ref),
                        "en": str(view.attrs.get("title_en") or view.attrs.get("title_ja")
                                  or entry.ref)})
    members = []
    values = {(v.municipality, v.sector): v for v in engine.emission_values(years=[inventory])}
    for m in plan.members_of(fiscal_year):
        own = [v for v in measures if m.code in v.scope]
        cycle = cycles.get(f"cycle:{m.code}:{fiscal_year}")
        member_values = [values.get((m.code, s)) for s in plan.sector_ids]
        members.append({
            "code": m.code,
            "name_ja": m.name_ja,
            "name_en": m.name_en,
            "state": cycle.state if cycle else None,
            "state_ja": mwf.state_label(cycle.state, "ja") if cycle else None,
            "state_en": mwf.state_label(cycle.state, "en") if cycle else None,
            "study": sum(1 for v in own if v.state == "study"),
            "implemented": sum(1 for v in own if v.state == "implemented"),
            "completed": sum(1 for v in own if v.state == "completed"),
            "commercialised": commercialised.get(m.code, []),
            "emissions": latest.by_member.get(m.code),
            "emissions_statuses": sorted({v.status for v in member_values if v is not None}),
        })

    regional_attrs = region[0].attrs
    done = regional_attrs.get("priority_evaluations", {})
    ratings = {r.id: (r.label_ja, r.label_en) for r in plan.rating_scale}
    priority = []
    for p in plan.priority_projects:
        evaluation = done.get(p.id)
        rating = evaluation["rating"] if evaluation else None
        priority.append({
            "id": p.id, "title_ja": p.title_ja, "title_en": p.title_en,
            "rating": rating,
            "rating_ja": ratings.get(rating, ("", ""))[0] if rating else None,
            "rating_en": ratings.get(rating, ("", ""))[1] if rating else None,
            "comment": evaluation.get("comment", "") if evaluation else "",
            "measures": sum(1 for v in measures if v.attrs.get("priority_project") == p.id),
            "leading": sum(1 for v in measures if v.attrs.get("priority_project") == p.id
                           and v.attrs.get("leading")),
        })

    advice = [
        {"ref": v.ref, "text": v.attrs.get("text", ""), "member": v.attrs.get("member", ""),
         "state": v.state, "answer": v.attrs.get("answer")}
        for v in engine.entities(workflow="advice", fiscal_year=fiscal_year)
    ]
    schedule = engine.schedule_of(fiscal_year + 1)
    totals_statuses: dict[str, int] = dict(latest.statuses)
    return {
        "plan": {"id": plan.id, "name_ja": plan.name_ja, "name_en": plan.name_en,
                 "base_year": plan.base_year, "statistics_lag": plan.statistics_lag},
        "fiscal_year": fiscal_year,
        "fiscal_year_ja": wareki(fiscal_year),
        "inventory_year": inventory,
        "as_of": engine.now().astimezone(TOKYO).strftime("%Y-%m-%d"),
        "simulation": engine.simulation,
        "sample": any("【サンプル】" in str(v.attrs.get("title_ja", "")) for v in measures),
        "region_state": region[0].state,
        "latest": {
            "total": latest.total,
            "base_total": latest.base_total,
            "reduction": latest.reduction,
            "target_reduction": latest.target_reduction,
            "target_total": latest.target_total,
            "members": len(latest.members),
            "missing": [list(x) for x in latest.missing],
            "statuses": totals_statuses,
        },
        "series": series,
        "sectors": sectors,
        "members": members,
        "priority_projects": priority,
        "advice": advice,
        "next_schedule": schedule,
    }


def canonical(data: dict[str, Any]) -> str:
    """The data in its one text form (what the publish entry stores)."""
    from ..audit import canonical_json

    return canonical_json(json.loads(json.dumps(data)))
