"""The publication for residents and the exports for staff, on the demo's database.

One module-scoped fixture plays the demo (≈10 s) once; tests read its database, or a copy
of it when they write. The page is opened in headless Chromium (skipped without it, unless
``PDCA_REQUIRE_CHROMIUM=1``, as set by CI, which makes a missing browser a failure), its
HTML is parsed with the standard library, its publication is verified against the audit
log, and the exports are read back and compared with the engine.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import pdca
from pdca.calendar import TOKYO
from pdca.cli import main
from pdca.demo import LATE, run_demo
from pdca.reporting import build_report, export_year, render_html, verify_report
from pdca.reporting.charts import PALETTE
from pdca.reporting.data import canonical, report_data

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
FY = 2025
INVENTORY = 2024
BASE = 2013
REQUIRE_CHROMIUM = os.environ.get("PDCA_REQUIRE_CHROMIUM") == "1"
BROWSER_TIMEOUT_S = 60

SECTIONS_JA = ["概要", "温室効果ガス排出量", "各市町村の進捗", "重点事業の評価",
               "意見聴取委員会の助言と対応", "来年度の日程", "数値について"]
SECTIONS_EN = ["Summary", "Greenhouse-gas emissions", "Progress of each municipality",
               "Evaluation of the priority projects",
               "Advice of the advisory committee, and what was done", "Next year's schedule",
               "About the figures"]
SECTION_IDS = ["summary", "emissions", "members", "priority", "advice", "schedule", "notes"]


# ----------------------------------------------------------------------------- the demo


@dataclass(frozen=True, kw_only=True, slots=True)
class Demo:
    directory: Path
    db: Path
    url: str
    ja: Path
    en: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo, played once for the module. Tests must not write to its database."""
    directory = tmp_path_factory.mktemp("demo")
    result = run_demo(directory)
    assert result.verified
    db = directory / "demo.db"
    # The engine closed: SQLite checkpointed the WAL, so demo.db alone is the database.
    for suffix in ("-wal", "-shm"):
        side = Path(f"{db}{suffix}")
        assert not side.exists() or side.stat().st_size == 0, f"{side} left behind"
    return Demo(directory=directory, db=db, url=result.url, ja=result.report,
                en=directory / f"report-{FY}-en.html")


@pytest.fixture
def demo_copy(demo: Demo, tmp_path: Path) -> str:
    """The URL of a private copy of the demo's database, for tests that write."""
    target = tmp_path / "copy.db"
    shutil.copyfile(demo.db, target)
    return f"sqlite:///{target}"


@pytest.fixture
def engine(demo: Demo) -> Iterator[pdca.Engine]:
    """The demo's database, for reading."""
    with pdca.Engine.open(demo.url) as opened:
        yield opened


def kt(value: float | None) -> str:
    return "—" if value is None else f"{value / 1000:,.1f}"


def num(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def run_cli(url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--db", url, "--lang", "en", *args],
                                catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


# ----------------------------------------------------------------------------- HTML tree


VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                  "source", "track", "wbr"})


@dataclass(eq=False)
class Node:
    tag: str
    attrs: dict[str, str]
    parent: Node | None = field(default=None, repr=False)
    children: list[Node | str] = field(default_factory=list, repr=False)

    def iter(self, tag: str | None = None) -> Iterator[Node]:
        for child in self.children:
            if isinstance(child, Node):
                if tag is None or child.tag == tag:
                    yield child
                yield from child.iter(tag)

    def all(self, tag: str) -> list[Node]:
        return list(self.iter(tag))

    def one(self, tag: str) -> Node:
        found = self.all(tag)
        assert len(found) == 1, f"{len(found)} <{tag}> where one was expected"
        return found[0]

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def words(self) -> str:
        return " ".join(self.text().split())

    def elements(self) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node)]

    def next_element(self) -> Node | None:
        assert self.parent is not None
        siblings = self.parent.elements()
        index = siblings.index(self)
        return siblings[index + 1] if index + 1 < len(siblings) else None

    def rows(self) -> list[list[str]]:
        """A table's body rows, as the words of their cells (th and td)."""
        return [[cell.words() for cell in row.elements() if cell.tag in ("th", "td")]
                for row in self.one("tbody").all("tr")]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def _node(self, tag: str, attrs: list[tuple[str, str | None]]) -> Node:
        node = Node(tag, {k: v or "" for k, v in attrs}, parent=self.stack[-1])
        self.stack[-1].children.append(node)
        return node

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = self._node(tag, attrs)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._node(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(page)
    builder.close()
    return builder.root


def by_id(root: Node, ident: str) -> Node:
    found = [n for n in root.iter() if n.attrs.get("id") == ident]
    assert len(found) == 1, f"{len(found)} elements with id {ident!r}"
    return found[0]


# ----------------------------------------------------------------------------- Chromium


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    found = _find_chromium()
    if found is None:
        if REQUIRE_CHROMIUM:
            pytest.fail("PDCA_REQUIRE_CHROMIUM=1 but no chromium is installed")
        pytest.skip("chromium is not installed")
    return found


@dataclass(frozen=True, kw_only=True, slots=True)
class BrowserRun:
    dom: str
    stderr: str
    netlog: dict[str, Any]
    screenshot: Path


def open_in_chromium(browser: str, page: Path, work: Path) -> BrowserRun:
    """Open ``page`` headless: its DOM once loaded, stderr (console), NetLog, screenshot."""
    work.mkdir(parents=True, exist_ok=True)
    netlog = work / "netlog.json"
    screenshot = work / "screenshot.png"
    args = [
        browser, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--no-first-run", "--disable-component-update",
        "--disable-sync", "--disable-extensions",
        "--disable-features=NetworkTimeServiceQuerying",
        f"--user-data-dir={work / 'profile'}", f"--log-net-log={netlog}",
        "--enable-logging=stderr", "--v=0", "--window-size=1280,2400", "--hide-scrollbars",
        f"--screenshot={screenshot}", "--dump-dom", page.as_uri(),
    ]
    # A session of its own: the browser's helper processes are ended with it, by group id.
    proc = subprocess.Popen(args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8", errors="replace",
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT_S} s")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}:\n{err[-3000:]}"
    assert screenshot.exists(), f"no screenshot:\n{err[-3000:]}"
    text = netlog.read_text(encoding="utf-8")
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a log cut short lacks its closing brackets
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    return BrowserRun(dom=out, stderr=err, netlog=log, screenshot=screenshot)


BROWSER_ITSELF = "not an origin"  # the initiator of the browser's own requests (updates, …)


def url_requests(netlog: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(url, initiator) of every URL request in a NetLog (initiator None if not logged)."""
    constants = netlog["constants"]
    url_request = constants["logSourceType"]["URL_REQUEST"]
    start_job = constants["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls: dict[int, str] = {}
    initiators: dict[int, str] = {}
    for event in netlog["events"]:
        source = event.get("source") or {}
        if source.get("type") != url_request:
            continue
        params = event.get("params") or {}
        if "url" in params:
            urls.setdefault(source["id"], params["url"])
        if event.get("type") == start_job and "initiator" in params:
            initiators[source["id"]] = params["initiator"]
    return [(url, initiators.get(ident)) for ident, url in urls.items()]


def page_requests(netlog: dict[str, Any]) -> list[str]:
    """The URLs the page asked for: every request but the browser's own background ones
    (which carry no initiator origin). A request whose initiator was not logged counts."""
    return [url for url, initiator in url_requests(netlog) if initiator != BROWSER_ITSELF]


def console_lines(stderr: str) -> list[str]:
    """The page's console messages in Chromium's log (not its own dbus or GPU chatter)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def colours(png: Path) -> set[tuple[int, ...]]:
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1280, 2400)
        found = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert found is not None
    return {c for _, c in found if isinstance(c, tuple)}


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return (int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16))


def test_the_browser_harness_sees_an_external_request_and_a_console_error(
    chromium: str, tmp_path: Path
) -> None:
    """The control: a page that fetches from the network and logs an error is caught, so
    the silence of the report below means something."""
    probe = tmp_path / "probe.html"
    probe.write_text('<!DOCTYPE html><html lang="en"><body><p>probe</p>'
                     '<img src="http://pdca-probe.invalid/x.png" alt="">'
                     '<script>console.error("pdca-probe"); notDefined();</script>'
                     "</body></html>", encoding="utf-8")
    run = open_in_chromium(chromium, probe, tmp_path / "browser")
    assert "http://pdca-probe.invalid/x.png" in page_requests(run.netlog)
    logged = "\n".join(console_lines(run.stderr))
    assert "pdca-probe" in logged and "Uncaught" in logged


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_the_page_opens_offline_without_errors_and_shows_its_charts(
    chromium: str, demo: Demo, tmp_path: Path, lang: str
) -> None:
    page = demo.ja if lang == "ja" else demo.en
    run = open_in_chromium(chromium, page, tmp_path / "browser")
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(run.screenshot, ARTIFACTS / f"report-{FY}-{lang}.png")

    # No request left the page: the NetLog holds only the browser's own background
    # traffic (update checks and the like, initiator "not an origin"), none of the page's.
    assert run.netlog["events"], "the NetLog is empty: was it recorded at all?"
    requested = page_requests(run.netlog)
    assert all(u.startswith(("file:", "data:")) for u in requested), requested
    assert not [u for u in requested if u.startswith(("http:", "https:", "ws:", "wss:"))]

    # No console message at all (the page has no script; a blocked or failed load, a CSP
    # or parse problem would show up here).
    assert console_lines(run.stderr) == []

    # The charts are in the DOM, each an image with a title.
    dom = parse(run.dom)
    charts = dom.all("svg")
    assert len(charts) == 2
    for chart in charts:
        assert chart.attrs.get("role") == "img"
        assert chart.one("title").words()
    assert dom.one("html").attrs.get("lang") == lang

    # ... and drawn: the screenshot is a real page, with every bar colour of the sector
    # chart painted (drawn at exactly these colours) and the anti-aliased text of a page.
    assert run.screenshot.stat().st_size > 30_000
    painted = colours(run.screenshot)
    assert len(painted) > 200
    missing_colours = [c for c in PALETTE if rgb(c) not in painted]
    assert missing_colours == []


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_the_page_is_structured_accessible_and_self_contained(
    demo: Demo, engine: pdca.Engine, lang: str
) -> None:
    page = (demo.ja if lang == "ja" else demo.en).read_text(encoding="utf-8")
    root = parse(page)
    assert root.one("html").attrs["lang"] == lang
    assert root.one("h1").words() == ("地球温暖化対策実行計画の進捗状況" if lang == "ja"
                                       else "Progress of the climate action plan")
    headings = root.all("h2")
    assert [h.words() for h in headings] == (SECTIONS_JA if lang == "ja" else SECTIONS_EN)
    assert [h.attrs.get("id") for h in headings] == SECTION_IDS
    for heading in headings:
        assert heading.parent is not None and heading.parent.tag == "section"
        assert heading.parent.attrs.get("aria-labelledby") == heading.attrs["id"]

    # The banner of a simulation with sample data.
    banner = [n for n in root.iter("p") if "banner" in n.attrs.get("class", "").split()]
    assert len(banner) == 1
    assert ("サンプル" if lang == "ja" else "SAMPLE") in banner[0].words()

    # The summary shows the database's figures.
    latest = engine.region_emissions(INVENTORY)
    summary = by_id(root, "summary").parent
    assert summary is not None
    values = [n.words() for n in summary.iter("div") if n.attrs.get("class") == "value"]
    assert values == [kt(latest.total), pct(latest.reduction), pct(latest.target_reduction),
                      str(len(latest.members))]
    assert kt(latest.total) == "5,752.1"  # the demo's numbers, spelled out once

    # Every chart is an image labelled by its title and description, with the numbers in
    # the description and again in the table that follows it.
    charts = root.all("svg")
    assert len(charts) == 2
    tables = []
    for chart in charts:
        assert chart.attrs["role"] == "img"
        title_id, desc_id = chart.attrs["aria-labelledby"].split()
        assert by_id(root, title_id).tag == "title" and by_id(root, title_id).parent is chart
        assert by_id(root, desc_id).tag == "desc" and by_id(root, desc_id).parent is chart
        assert chart.parent is not None and chart.parent.tag == "figure"
        table = chart.parent.next_element()
        assert table is not None and table.tag == "table"
        tables.append((by_id(root, desc_id).words(), table.rows()))

    (trend_desc, trend_rows), (sector_desc, sector_rows) = tables
    expected_years = [BASE, *sorted({v.year for v in engine.emission_values()} - {BASE})]
    assert [int(r[0]) for r in trend_rows] == expected_years
    for row in trend_rows:
        year = int(row[0])
        total = latest.base_total if year == BASE else engine.region_emissions(year).total
        assert row[1] == num(total)
        assert f"{year} {kt(total)}" in trend_desc
    assert trend_rows[-1][1:5] == [num(latest.total), num(latest.base_total),
                                   pct(latest.reduction), pct(latest.target_reduction)]
    plan = engine.plan
    assert len(sector_rows) == len(plan.sectors)
    for sector, row in zip(plan.sectors, sector_rows, strict=True):
        name = sector.name_ja if lang == "ja" else sector.name_en
        value = latest.by_sector[sector.id]
        assert row == [name, num(value)]
        assert f"{name} {kt(value)}" in sector_desc

    # Each member's emissions of the inventory year.
    members = by_id(root, "members").parent
    assert members is not None
    rows = members.one("table").rows()
    assert [r[-1] for r in rows] == [num(latest.by_member[m.code])
                                     for m in plan.members_of(FY)]

    # A print stylesheet; nothing fetched from elsewhere.
    [style_element] = [n for n in root.one("head").elements() if n.tag == "style"]
    style = style_element.text()
    assert "@media print" in style
    assert not root.all("link")
    assert all("src" not in s.attrs for s in root.all("script"))
    assert "@import" not in page
    assert re.findall(r"url\(\s*['\"]?(?!#)", page) == []  # only url(#clip-path) inside
    fetched = [(n.tag, k, v) for n in root.iter() for k, v in n.attrs.items()
               if k in ("src", "href", "xlink:href", "srcset", "poster", "data", "action")
               and re.match(r"\s*(https?:)?//", v)]
    assert fetched == []
    # The only http(s) URLs anywhere are the SVG namespace names, which are never fetched.
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) <= {
        "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


def test_every_id_in_the_page_is_unique(demo: Demo) -> None:
    ids = [n.attrs["id"] for n in parse(demo.ja.read_text(encoding="utf-8")).iter()
           if "id" in n.attrs]
    assert sorted({i for i in ids if ids.count(i) > 1}) == []


def test_the_base_year_row_shows_the_stage_of_its_figures(demo: Demo) -> None:
    root = parse(demo.ja.read_text(encoding="utf-8"))
    emissions = by_id(root, "emissions").parent
    assert emissions is not None
    base_row = emissions.all("table")[0].rows()[0]
    assert base_row[0] == str(BASE)
    assert base_row[-1] == "確定値 180"


# ----------------------------------------------------------------------------- freezing


def _publish_entry(engine: pdca.Engine) -> Any:
    entries = list(engine.audit_log(trigger="publish", kind="transition"))
    assert len(entries) == 1
    return entries[0]


def test_the_published_page_is_frozen_in_the_audit_log(demo: Demo, engine: pdca.Engine,
                                                        tmp_path: Path) -> None:
    entry = _publish_entry(engine)
    stored = json.loads(entry.data)
    raw = demo.ja.read_bytes()
    assert stored["report_sha256"] == hashlib.sha256(raw).hexdigest()
    assert stored["report_lang"] == "ja"
    assert (entry.ref, entry.fiscal_year, entry.to_state) == (f"cycle:region:{FY}", FY,
                                                              "published")

    checked = verify_report(engine, demo.ja)
    assert (checked.published, checked.fiscal_year, checked.seq) == (True, FY, entry.seq)
    assert checked.sha256 == stored["report_sha256"]

    # The data the page was built from, in its canonical form, as of publication: the
    # figures are those of the database; the state and date are those of that moment.
    data_text = stored["report_data"]
    assert canonical(json.loads(data_text)) == data_text
    then = json.loads(data_text)
    now = json.loads(canonical(report_data(engine, FY)))
    for key in ("plan", "fiscal_year", "inventory_year", "latest", "series", "sectors",
                "priority_projects", "simulation", "sample"):
        assert then[key] == now[key], key
    assert then["latest"]["total"] == engine.region_emissions(INVENTORY).total
    assert then["region_state"] == "committee_held"  # publish fires from there
    assert now["region_state"] == "closed"
    assert entry.virtual_at is not None
    assert then["as_of"] == entry.virtual_at.astimezone(TOKYO).date().isoformat()
    assert kt(then["latest"]["total"]) in raw.decode("utf-8")

    # One byte changed, and it is no longer the published page.
    altered = tmp_path / demo.ja.name
    edited = bytearray(raw)
    at = raw.index(kt(then["latest"]["total"]).encode())
    edited[at] = ord("6") if edited[at] != ord("6") else ord("7")
    altered.write_bytes(bytes(edited))
    assert sum(a != b for a, b in zip(raw, edited, strict=True)) == 1
    assert verify_report(engine, altered).published is False

    # The English page was built, never published.
    assert verify_report(engine, demo.en).published is False


def test_report_verify_cli_exits_0_for_the_published_page_and_1_otherwise(
    demo: Demo, tmp_path: Path
) -> None:
    code, out, _ = run_cli(demo.url, "report", "verify", str(demo.ja), "--json")
    assert code == 0
    shown = json.loads(out)
    assert (shown["published"], shown["fiscal_year"]) == (True, FY)

    altered = tmp_path / demo.ja.name
    raw = bytearray(demo.ja.read_bytes())
    raw[-2] ^= 0x01  # inside the closing </html>
    altered.write_bytes(bytes(raw))
    code, out, _ = run_cli(demo.url, "report", "verify", str(altered))
    assert code == 1
    assert "no match" in out
    code, _, _ = run_cli(demo.url, "report", "verify", str(demo.en))
    assert code == 1


def test_the_page_rebuilt_from_the_stored_data_is_the_published_page(
    engine: pdca.Engine,
) -> None:
    stored = json.loads(_publish_entry(engine).data)
    rebuilt = render_html(json.loads(stored["report_data"]), "ja").encode("utf-8")
    assert hashlib.sha256(rebuilt).hexdigest() == stored["report_sha256"]


# ----------------------------------------------------------------------------- bad input


def test_a_year_without_cycles_is_refused_saying_it_has_no_data(engine: pdca.Engine,
                                                               tmp_path: Path) -> None:
    assert engine.cycles(2023) == []
    with pytest.raises(pdca.InvalidInput, match="FY2023 has no data"):
        build_report(engine, 2023, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_year_not_aggregated_is_refused_naming_the_members_without_report(
    demo: Demo, engine: pdca.Engine, tmp_path: Path
) -> None:
    with pytest.raises(pdca.InvalidInput, match="FY2026 is not aggregated yet") as caught:
        build_report(engine, 2026, tmp_path / "out")
    message = caught.value.message
    for member in engine.plan.members_of(2026):
        assert f"{member.name_ja} ({member.code})" in message
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli(demo.url, "report", "--fy", "2026", "--out",
                           str(tmp_path / "cli"))
    assert code == 2
    assert "not aggregated yet" in err


def test_a_year_with_a_partly_missing_inventory_shows_it_as_missing(
    demo_copy: str, tmp_path: Path
) -> None:
    """2020's figures arrive for every member but one: the trend shows that year as
    missing ('—'), never as a total of the others."""
    with pdca.Engine.open(demo_copy) as engine:
        plan = engine.plan
        lines = ["municipality,year,sector,value_t_co2,status"]
        lines += [f"{m.code},2020,{s},{1000 + i},estimated"
                  for i, m in enumerate(plan.members_of(2020)) if m.code != LATE
                  for s in plan.sector_ids]
        source = tmp_path / "emissions-2020.csv"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        engine.import_emissions(source, actor="secretariat")
        partial = engine.region_emissions(2020)
        assert partial.total is None
        assert {code for code, _ in partial.missing} == {LATE}
        report = build_report(engine, FY, tmp_path / "site")

    root = parse(report.path.read_text(encoding="utf-8"))
    emissions = by_id(root, "emissions").parent
    assert emissions is not None
    rows = {r[0]: r for r in emissions.all("table")[0].rows()}
    assert rows["2020"][1:4] == ["—", num(partial.base_total), "—"]
    assert rows["2020"][5] == f"推計値 {(len(partial.members) - 1) * len(plan.sector_ids)}"
    assert "2020 —" in by_id(root, "chart-emissions-d").words()
    notes = by_id(root, "notes").parent
    assert notes is not None
    assert "「—」は未入力（欠測）を示し、0ではありません。" in notes.words()


@pytest.mark.parametrize(("lang", "missing_note"), [("ja", "欠測: 1"), ("en", "missing: 1")])
def test_a_missing_latest_value_is_shown_as_a_dash_and_counted(
    engine: pdca.Engine, lang: str, missing_note: str
) -> None:
    """The workflow does not let a member report without all its figures, so a latest
    year with a hole is built by hand: the page must show '—', not 0, and count it."""
    data = json.loads(canonical(report_data(engine, FY)))
    data["latest"].update(total=None, reduction=None, missing=[[LATE, "waste"]])
    data["sectors"][-1]["value"] = None
    data["members"][-1]["emissions"] = None
    root = parse(render_html(data, lang))

    summary = by_id(root, "summary").parent
    assert summary is not None
    values = [n.words() for n in summary.iter("div") if n.attrs.get("class") == "value"]
    assert values[:2] == ["—", "—"]
    emissions = by_id(root, "emissions").parent
    assert emissions is not None
    assert emissions.all("table")[1].rows()[-1][-1] == "—"
    assert by_id(root, "chart-sectors-d").words().endswith(" —")
    members = by_id(root, "members").parent
    assert members is not None
    assert members.one("table").rows()[-1][-1] == "—"
    notes = by_id(root, "notes").parent
    assert notes is not None
    assert missing_note in notes.words()


# ----------------------------------------------------------------------------- exports

SHEETS = {
    "施策": ["コード", "市町村", "名称", "名称（英語）", "施策分野", "状態", "状態コード",
           "重点事業", "先導的事業", "指標", "単位", "目標値"],
    "評価": ["施策コード", "年度", "評価", "実績値", "コメント", "記録者"],
    "排出量": ["市町村コード", "市町村", "年度", "部門", "排出量(t-CO2)", "数値の段階"],
    "進捗状況": ["コード", "市町村", "段階", "段階コード", "期限超過"],
    "監査ログ": ["番号", "日時(UTC)", "仮想時刻", "実行者", "役割", "対象", "種別", "操作",
             "変更前", "変更後", "備考", "ハッシュ"],
}


def test_the_xlsx_export_holds_the_numbers_of_the_database(engine: pdca.Engine,
                                                          tmp_path: Path) -> None:
    from openpyxl import load_workbook

    [path] = export_year(engine, FY, tmp_path / "x.xlsx")
    assert path == tmp_path / "x.xlsx"
    book = load_workbook(path, read_only=True)
    try:
        assert book.sheetnames == list(SHEETS)
        sheets: dict[str, list[tuple[Any, ...]]] = {
            name: list(book[name].iter_rows(values_only=True)) for name in SHEETS}
    finally:
        book.close()
    for name, headers in SHEETS.items():
        assert list(sheets[name][0]) == headers, name
    body = {name: rows[1:] for name, rows in sheets.items()}

    measures = {v.ref.split(":", 1)[1]: v.state for v in engine.entities(workflow="measure")}
    assert {r[0]: r[6] for r in body["施策"]} == measures
    assert len(body["施策"]) == len(measures) == 37

    evaluations = engine.evaluations(fiscal_year=FY)
    assert evaluations
    assert sorted((r[0], r[1], r[2]) for r in body["評価"]) == sorted(
        (e.measure.split(":", 1)[1], e.fiscal_year, e.rating) for e in evaluations)

    values = engine.emission_values(years=[BASE, INVENTORY])
    assert sorted((r[0], r[2], r[3], r[4], r[5]) for r in body["排出量"]) == sorted(
        (v.municipality, v.year, v.sector, v.value_t_co2, v.status) for v in values)
    assert {r[2] for r in body["排出量"]} == {BASE, INVENTORY}

    status = engine.status(FY)
    expected = {"region": status["region"]["state"]} | {
        m["code"]: m["state"] for m in status["municipalities"]}
    assert {r[0]: r[3] for r in body["進捗状況"]} == expected
    assert all(r[4] is False for r in body["進捗状況"])

    publish = _publish_entry(engine)
    audit = {r[0]: r for r in body["監査ログ"]}
    assert audit[publish.seq][7] == "publish"
    assert audit[publish.seq][11] == publish.hash


def test_the_csv_export_writes_five_files_with_a_bom(engine: pdca.Engine,
                                                     tmp_path: Path) -> None:
    from openpyxl import load_workbook

    paths = export_year(engine, FY, tmp_path / "csv", fmt="csv")
    assert [p.name for p in paths] == [f"{stem}-{FY}.csv" for stem in (
        "measures", "evaluations", "emissions", "cycles", "audit")]
    [xlsx] = export_year(engine, FY, tmp_path / "x.xlsx")
    book = load_workbook(xlsx, read_only=True)
    try:
        counts = [sum(1 for _ in book[name].iter_rows()) for name in SHEETS]
    finally:
        book.close()
    for path, headers, count in zip(paths, SHEETS.values(), counts, strict=True):
        raw = path.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf"), path.name
        rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
        assert rows[0] == headers
        assert len(rows) == count, path.name


def test_export_refuses_an_unknown_format(engine: pdca.Engine, tmp_path: Path) -> None:
    with pytest.raises(pdca.InvalidInput, match="unknown format 'pdf'"):
        export_year(engine, FY, tmp_path / "x.pdf", fmt="pdf")
    assert list(tmp_path.iterdir()) == []


def test_export_cli(demo: Demo, tmp_path: Path) -> None:
    out = tmp_path / "令和7年度.xlsx"
    code, stdout, _ = run_cli(demo.url, "export", "--fy", str(FY), "--format", "xlsx",
                              "--out", str(out))
    assert code == 0
    assert stdout.strip() == str(out)
    assert out.stat().st_size > 0
    code, _, err = run_cli(demo.url, "export", "--fy", str(FY), "--format", "pdf",
                           "--out", str(tmp_path / "x.pdf"))
    assert code == 2
    assert "pdf" in err
