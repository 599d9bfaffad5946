"""The publication for residents (one self-contained HTML page) and exports for staff.

- :func:`build_report` writes the page of a fiscal year: styles and charts inline, no
  request leaves it; Japanese by default, English available; real headings, every chart
  with a text alternative and its numbers in a table, a print stylesheet.
- :func:`publish_report` builds the page and fires the regional cycle's ``publish``
  with the page's SHA-256 and the data it was built from, in the audit entry.
- :func:`verify_report` tells whether a file is exactly what was published.
- :func:`export_year` writes measures, evaluations, emissions, cycle status and an audit
  extract as XLSX (one sheet each) or CSV files, with Japanese headers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput
from .data import canonical, report_data
from .texts import TEXTS

if TYPE_CHECKING:
    from ..engine import Engine
    from ..types import Transition

@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    """A built publication: where it is, its SHA-256, the data it shows."""

    path: Path
    sha256: str
    data: dict[str, Any]
    lang: str


def render_html(data: dict[str, Any], lang: str = "ja") -> str:
    """The page of ``data`` (from :func:`report_data`) in ``lang``."""
    import jinja2

    from .. import __version__
    from .charts import emissions_chart, sector_chart

    if lang not in TEXTS:
        raise InvalidInput(f"unknown language {lang!r}; use ja or en", field="lang")
    t = dict(TEXTS[lang])
    t["note_lag"] = t["note_lag"].format(
        lag=data["plan"]["statistics_lag"], inv=data["inventory_year"])

    def num(value: float | None) -> str:
        return "—" if value is None else f"{value:,.0f}"

    def kt(value: float | None) -> str:
        return "—" if value is None else f"{value / 1000:,.1f}"

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value * 100:.1f}%"

    def statuses(counts: dict[str, int]) -> str:
        separator = "、" if lang == "ja" else ", "
        return separator.join(f"{t.get(k, k)} {v}" for k, v in sorted(counts.items())) or "—"

    chart_labels = {"total": t["total"], "target": t["target_line"], "base": t["base_same"],
                    "unit": t["unit"], "title": t["chart_title"],
                    "description": t["chart_emissions_caption"] + ": " + "; ".join(
                        f"{p['year']} {kt(p['total'])}" for p in data["series"])}
    sector_labels = {"unit": t["unit"], "title": t["sector_title"],
                     "description": "; ".join(
                         f"{s['name_ja'] if lang == 'ja' else s['name_en']} {kt(s['value'])}"
                         for s in data["sectors"])}
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pdca.reporting", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    fy = data["fiscal_year"]
    return env.get_template("report.html.j2").render(
        lang=lang,
        t=t,
        data=data,
        version=__version__,
        plan_name=data["plan"]["name_ja" if lang == "ja" else "name_en"],
        fy_label=(f"{data['fiscal_year_ja']}（{fy}年度）" if lang == "ja" else f"FY{fy}"),
        chart_emissions=emissions_chart(data["series"], base_year=data["plan"]["base_year"],
                                        labels=chart_labels),
        chart_sectors=sector_chart(data["sectors"], lang=lang, labels=sector_labels),
        num=num, kt=kt, pct=pct, statuses=statuses,
    )


def build_report(engine: Engine, fiscal_year: int, out: str | Path, *,
                 lang: str = "ja") -> Report:
    """Write ``OUT/report-FY-LANG.html`` for ``fiscal_year``; refuses a year not aggregated."""
    data = report_data(engine, fiscal_year)
    page = render_html(data, lang)
    directory = Path(out)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot write to {directory}: {exc.strerror}", field="out") from None
    path = directory / f"report-{fiscal_year}-{lang}.html"
    raw = page.encode("utf-8")
    path.write_bytes(raw)
    return Report(path=path, sha256=hashlib.sha256(raw).hexdigest(), data=data, lang=lang)


def publish_report(engine: Engine, fiscal_year: int, out: str | Path, *, actor: str,
                   lang: str = "ja", url: str | None = None) -> tuple[Report, Transition]:
    """Build the page and fire ``publish`` on ``cycle:region:FY`` with its SHA-256 and the
    data it was built from, in the audit entry."""
    report = build_report(engine, fiscal_year, out, lang=lang)
    data: dict[str, Any] = {"report_sha256": report.sha256, "report_data": canonical(report.data),
                            "report_lang": lang}
    if url:
        data["url"] = url
    transition = engine.fire(f"cycle:region:{fiscal_year}", "publish", actor=actor, data=data,
                             note=f"published {report.path.name}")
    return report, transition


@dataclass(frozen=True, kw_only=True, slots=True)
class Verification:
    path: Path
    sha256: str
    published: bool
    fiscal_year: int | None = None
    seq: int | None = None


def verify_report(engine: Engine, path: str | Path) -> Verification:
    """Whether the file at ``path`` is byte for byte a page that was published."""
    file = Path(path)
    try:
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise InvalidInput("the file does not exist", source=str(file)) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read the file: {exc.strerror}", source=str(file)) from None
    for entry in engine.audit_log(trigger="publish", kind="transition"):
        stored = json.loads(entry.data)
        if stored.get("report_sha256") == digest:
            return Verification(path=file, sha256=digest, published=True,
                                fiscal_year=entry.fiscal_year, seq=entry.seq)
    return Verification(path=file, sha256=digest, published=False)


from .export import export_year  # noqa: E402  (export builds on the names above)

__all__ = [
    "Report",
    "Verification",
    "build_report",
    "export_year",
    "publish_report",
    "render_html",
    "report_data",
    "verify_report",
]
