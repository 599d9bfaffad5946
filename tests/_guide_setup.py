"""Set-up steps that the guides describe in words; run by tests/test_guides.py.

``python tests/_guide_setup.py other-members-report URL`` makes the 17 other members of
the training database report for FY2025, as they would have by November.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pdca

FY = 2025


def other_members_report(url: str, workdir: Path) -> None:
    with pdca.Engine.open(url) as engine:
        plan = engine.plan
        others = [m.code for m in plan.members_of(FY) if m.code != "431001"]
        lines = ["municipality,year,sector,value_t_co2,status"]
        for code in others:
            engine.add_person(f"staff-{code}", role="staff", municipality=code, actor="admin")
            for sector in plan.sector_ids:
                lines.append(f"{code},{plan.inventory_year(FY)},{sector},1000,preliminary")
        path = workdir / "others-emissions.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        engine.import_emissions(path, actor="secretariat")
        for code in others:
            ref = f"cycle:{code}:{FY}"
            for trigger in ("confirm_status", "submit_emissions", "finish_evaluation",
                            "report_internally"):
                engine.fire(ref, trigger, actor=f"staff-{code}")


if __name__ == "__main__":
    step, url = sys.argv[1], sys.argv[2]
    {"other-members-report": other_members_report}[step](url, Path.cwd())
