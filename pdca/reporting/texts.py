"""The words of the publication, in Japanese and English.

Each sentence stays on one line so that whoever edits a translation sees it whole.
"""
# ruff: noqa: E501

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    "ja": {
        "title": "地球温暖化対策実行計画の進捗状況", "as_of": "データ時点",
        "sample_banner": "これはサンプルデータによるシミュレーションです。実際の数値ではありません。",
        "summary": "概要", "latest_total": "圏域の温室効果ガス排出量", "kt": "千t-CO2",
        "reduction": "基準年度比の削減率", "same_members": "同じ構成市町村で比較",
        "target_now": "この年の目標削減率", "target_path": "基準年度から目標年度への直線",
        "members_label": "構成市町村", "municipalities": "市町村", "emissions": "温室効果ガス排出量",
        "chart_emissions_caption": "圏域の排出量の推移（棒）、基準年度の水準（破線）、目標の経路（折れ線）",
        "chart_title": "圏域の温室効果ガス排出量の推移",
        "table_of_chart": "グラフの数値", "year": "年度", "total": "排出量", "t": "t-CO2",
        "base_same": "基準年度（同じ市町村）", "target": "目標削減率", "status": "数値の段階",
        "by_sector": "部門別の排出量", "chart_sectors_caption": "部門別の排出量（千t-CO2）",
        "sector_title": "部門別の温室効果ガス排出量", "sector": "部門",
        "members": "各市町村の進捗", "municipality": "市町村", "cycle": "点検の段階",
        "study": "検討事業", "implementation": "実施事業", "commercialised": "今年度事業化した事業",
        "emissions_col": "排出量", "priority": "重点事業の評価", "project": "重点事業",
        "rating": "評価", "measures_count": "事業数", "leading": "先導的事業", "comment": "コメント",
        "missing": "未評価", "advice": "意見聴取委員会の助言と対応", "advice_text": "助言",
        "answer": "対応", "not_answered": "対応を検討中", "no_advice": "助言はありませんでした。",
        "next_schedule": "来年度の日程", "step": "手順", "opens": "開始", "due": "期限",
        "notes": "数値について",
        "note_lag": "排出量は統計の公表を待って算定するため、この年度の点検で算定するのは{lag}年前の排出量（{inv}年度）です。",
        "note_status": "数値には速報値・推計値・確定値があり、後に改定されることがあります。今回の内訳:",
        "note_members": "削減率は、その年度の構成市町村の排出量を、同じ市町村の基準年度の排出量と比べたものです。",
        "note_missing": "「—」は未入力（欠測）を示し、0ではありません。", "missing_count": "欠測:",
        "generated": "作成:", "preliminary": "速報値", "estimated": "推計値", "final": "確定値",
        "unit": "千t-CO2", "target_line": "目標の経路",
    },
    "en": {
        "title": "Progress of the climate action plan", "as_of": "data as of",
        "sample_banner": "This is a simulation with SAMPLE data. These are not real figures.",
        "summary": "Summary", "latest_total": "Greenhouse-gas emissions of the region",
        "kt": "thousand t-CO2", "reduction": "Reduction from the base year",
        "same_members": "compared over the same municipalities",
        "target_now": "Target reduction for this year",
        "target_path": "straight line from the base year to the target years",
        "members_label": "Member municipalities", "municipalities": "municipalities",
        "emissions": "Greenhouse-gas emissions",
        "chart_emissions_caption": "The region's emissions by year (bars), the base year's level "
        "(dashed) and the target path (line)",
        "chart_title": "Greenhouse-gas emissions of the region by year",
        "table_of_chart": "The numbers of the chart", "year": "year", "total": "emissions",
        "t": "t-CO2", "base_same": "base year (same members)", "target": "target reduction",
        "status": "stage of the figures", "by_sector": "Emissions by sector",
        "chart_sectors_caption": "Emissions by sector (thousand t-CO2)",
        "sector_title": "Greenhouse-gas emissions by sector", "sector": "sector",
        "members": "Progress of each municipality", "municipality": "municipality",
        "cycle": "stage of the check", "study": "study projects",
        "implementation": "implementation projects",
        "commercialised": "funded this year", "emissions_col": "emissions",
        "priority": "Evaluation of the priority projects", "project": "priority project",
        "rating": "rating", "measures_count": "measures", "leading": "leading",
        "comment": "comment", "missing": "not evaluated",
        "advice": "Advice of the advisory committee, and what was done",
        "advice_text": "advice", "answer": "what was done", "not_answered": "under consideration",
        "no_advice": "No advice was given.", "next_schedule": "Next year's schedule",
        "step": "step", "opens": "opens", "due": "due", "notes": "About the figures",
        "note_lag": "Emissions are calculated once statistics are published, so the check of "
        "this year calculates the emissions of {lag} years before ({inv}).",
        "note_status": "Figures are preliminary, estimated or final, and may be revised later. "
        "This time:",
        "note_members": "The reduction compares the emissions of the year's member "
        "municipalities with the base-year emissions of the same municipalities.",
        "note_missing": "“—” marks a missing value (not zero).", "missing_count": "missing:",
        "generated": "made with", "preliminary": "preliminary", "estimated": "estimated",
        "final": "final", "unit": "thousand t-CO2", "target_line": "target path",
    },
}
