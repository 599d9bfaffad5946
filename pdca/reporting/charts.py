"""Charts as inline SVG, drawn with matplotlib with their text kept as text.

Text stays text (``svg.fonttype = "none"``) so the browser renders Japanese with its own
fonts and no font file has to travel with the page. matplotlib only measures the labels
with its own font, which lacks Japanese glyphs; the warnings it gives about that are
expected and silenced here, and only here.
"""

from __future__ import annotations

import html
import io
import re
import warnings
from collections.abc import Sequence
from typing import Any

PALETTE = ("#1b6b4f", "#7fb77e", "#c9a227", "#9e4a3b", "#4a6fa5", "#8c6bb1", "#5b8e7d",
           "#d08c60", "#6c757d", "#2f4858")
FONTS = ["Hiragino Sans", "Yu Gothic", "Meiryo", "Noto Sans CJK JP", "IPAGothic",
         "DejaVu Sans", "sans-serif"]


def _svg(figure: Any, chart_id: str, title: str, description: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    # A fixed salt makes matplotlib's generated ids the same on every build, so the same
    # data always gives the same page, byte for byte (its SHA-256 is what is published).
    with plt.rc_context({"svg.hashsalt": chart_id}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    # Two charts in one page: prefix every id (and every reference to one) with the chart's.
    text = re.sub(r'id="([^"]+)"', rf'id="{chart_id}-\1"', text)
    text = re.sub(r'(xlink:href|href)="#([^"]+)"', rf'\1="#{chart_id}-\2"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{chart_id}-\1)", text)
    label = (f'<title id="{{id}}-t">{html.escape(title)}</title>'
             f'<desc id="{{id}}-d">{html.escape(description)}</desc>')
    return text.replace(
        "<svg ",
        '<svg role="img" aria-labelledby="{id}-t {id}-d" class="chart" ',
        1,
    ).replace(">", ">" + label, 1)


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "svg.fonttype": "none",
        "font.family": "sans-serif",
        "font.sans-serif": FONTS,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 12,
        "font.size": 10,
    })
    return plt.subplots(figsize=(width, height))


def _close(figure: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def emissions_chart(
    series: Sequence[dict[str, Any]],
    *,
    base_year: int,
    labels: dict[str, str],
) -> str:
    """Region emissions by year (bars), the base year's level and the target path."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from (current )?font")
        warnings.filterwarnings("ignore", message=r".*findfont: Font family .* not found")
        figure, ax = _figure(7.5, 3.6)
        years = [str(p["year"]) for p in series]
        totals = [(p["total"] or 0) / 1000 for p in series]
        colours = [PALETTE[0] if p["total"] is not None else "#dddddd" for p in series]
        ax.bar(years, totals, color=colours, label=labels["total"])
        targets = [(p["target_total"] / 1000) if p["target_total"] else None for p in series]
        ax.plot([y for y, t in zip(years, targets, strict=True) if t is not None],
                [t for t in targets if t is not None], color=PALETTE[3], marker="o",
                label=labels["target"])
        base = next((p["total"] for p in series if p["year"] == base_year), None)
        if base:
            ax.axhline(base / 1000, color=PALETTE[6], linestyle="--", linewidth=1,
                       label=labels["base"])
        ax.set_ylabel(labels["unit"])
        ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3,
                  fontsize=9)
        svg = _svg(figure, "chart-emissions", labels["title"], labels["description"])
        _close(figure)
    return svg.replace("{id}", "chart-emissions")


def sector_chart(
    sectors: Sequence[dict[str, Any]],
    *,
    lang: str,
    labels: dict[str, str],
) -> str:
    """The region's emissions of one year by sector (horizontal bars)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from (current )?font")
        warnings.filterwarnings("ignore", message=r".*findfont: Font family .* not found")
        figure, ax = _figure(7.5, 3.6)
        names = [s["name_ja"] if lang == "ja" else s["name_en"] for s in sectors][::-1]
        values = [(s["value"] or 0) / 1000 for s in sectors][::-1]
        ax.barh(names, values, color=[PALETTE[i % len(PALETTE)] for i in range(len(names))])
        ax.set_xlabel(labels["unit"])
        svg = _svg(figure, "chart-sectors", labels["title"], labels["description"])
        _close(figure)
    return svg.replace("{id}", "chart-sectors")
