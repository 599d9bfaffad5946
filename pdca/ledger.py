"""Emissions arithmetic (pure): region totals, like-for-like base-year reduction, targets.

A region's total for an inventory year is summed over **that year's members**, and it is
compared with the base-year emissions of **the same members**, so a municipality that joined
later makes the region look neither better nor worse. A missing value makes the total
missing (``None``) and is listed, never counted as zero.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from .plans import Plan

Key = tuple[str, int, str]  # (municipality, inventory year, sector)


@dataclass(frozen=True, kw_only=True, slots=True)
class EmissionValue:
    municipality: str
    year: int
    sector: str
    value_t_co2: float
    status: str


@dataclass(frozen=True, kw_only=True, slots=True)
class RegionYear:
    """The region's emissions in one inventory year, over that year's members."""

    year: int
    members: tuple[str, ...]
    total: float | None
    by_sector: Mapping[str, float | None]
    by_member: Mapping[str, float | None]
    missing: tuple[tuple[str, str], ...]
    statuses: Mapping[str, int]
    base_year: int
    base_total: float | None
    base_missing: tuple[tuple[str, str], ...]
    reduction: float | None
    target_reduction: float | None
    target_total: float | None

    @property
    def complete(self) -> bool:
        return not self.missing


def target_reduction(plan: Plan, year: int) -> float | None:
    """The reduction the plan aims for in ``year``, on straight lines between its targets.

    0 in the base year; between two target years (or the base year and the first target)
    linear; after the last target, the last target's reduction; ``None`` before the base
    year.
    """
    if year < plan.base_year:
        return None
    points = [(plan.base_year, 0.0)] + [(t.fiscal_year, t.reduction) for t in plan.targets]
    for (y0, r0), (y1, r1) in itertools.pairwise(points):
        if y0 <= year <= y1:
            return r0 + (r1 - r0) * (year - y0) / (y1 - y0)
    return points[-1][1]


def _sum(
    values: Mapping[Key, EmissionValue], members: list[str], year: int, sectors: tuple[str, ...]
) -> tuple[float | None, dict[str, float | None], dict[str, float | None], list[tuple[str, str]]]:
    missing: list[tuple[str, str]] = []
    by_sector: dict[str, float | None] = {}
    by_member: dict[str, float | None] = dict.fromkeys(members, 0.0)
    for sector in sectors:
        subtotal: float | None = 0.0
        for code in members:
            value = values.get((code, year, sector))
            if value is None:
                missing.append((code, sector))
                subtotal = None
                by_member[code] = None
                continue
            if subtotal is not None:
                subtotal += value.value_t_co2
            current = by_member[code]
            if current is not None:
                by_member[code] = current + value.value_t_co2
        by_sector[sector] = subtotal
    # No member at all is no figure, not zero.
    total = None if missing or not members else sum(
        v for v in by_sector.values() if v is not None)
    return total, by_sector, by_member, missing


def region_year(plan: Plan, values: Mapping[Key, EmissionValue], year: int) -> RegionYear:
    """The region's emissions in inventory ``year`` and their reduction from the base year."""
    members = [m.code for m in plan.members_of(year)]
    sectors = plan.sector_ids
    total, by_sector, by_member, missing = _sum(values, members, year, sectors)
    base_total, _, _, base_missing = _sum(values, members, plan.base_year, sectors)
    statuses: dict[str, int] = {}
    for code in members:
        for sector in sectors:
            value = values.get((code, year, sector))
            if value is not None:
                statuses[value.status] = statuses.get(value.status, 0) + 1
    reduction = (
        None
        if total is None or base_total is None or base_total == 0
        else 1 - total / base_total
    )
    target = target_reduction(plan, year)
    return RegionYear(
        year=year,
        members=tuple(members),
        total=total,
        by_sector=by_sector,
        by_member=by_member,
        missing=tuple(missing),
        statuses=statuses,
        base_year=plan.base_year,
        base_total=base_total,
        base_missing=tuple(base_missing),
        reduction=reduction,
        target_reduction=target,
        target_total=None if base_total is None or target is None else base_total * (1 - target),
    )
