"""The emissions ledger: one value per municipality, inventory year and sector.

``emissions:MUNICIPALITY:YEAR:SECTOR`` holds tonnes CO2-equivalent with the status of the
figure, a workflow of its own: ``preliminary`` (速報値) → ``estimated`` (推計値) → ``final``
(確定値). A value may be corrected while it is preliminary or estimated (``update``); a final
value changes only by ``revise``, which needs a reason — the audit log keeps every old value.
"""

from __future__ import annotations

from typing import Any

from ..types import Role, validate_municipality_code
from .base import CreateSpec, FieldSpec, StateSpec, Subject, TransitionSpec, WorkflowSpec

STATUSES = ("preliminary", "estimated", "final")
EDITORS = frozenset({Role.STAFF, Role.SECRETARIAT})
VALUE = FieldSpec(name="value_t_co2", type="float", required=True, minimum=0.0,
                  label_ja="排出量 (t-CO2)", label_en="emissions (t-CO2)")


def _set_value(subject: Subject) -> dict[str, Any]:
    return {"value_t_co2": subject.data["value_t_co2"]}


EMISSIONS = WorkflowSpec(
    name="emissions",
    key_pattern=r"^\d{6}:\d{4}:[a-z][a-z0-9_]{0,39}$",
    label_ja="温室効果ガス排出量",
    label_en="greenhouse-gas emissions",
    description="Tonnes CO2-eq of one sector of one municipality in one inventory year.",
    states=(
        StateSpec(code="preliminary", label_ja="速報値", label_en="preliminary"),
        StateSpec(code="estimated", label_ja="推計値", label_en="estimated"),
        StateSpec(code="final", label_ja="確定値", label_en="final"),
    ),
    transitions=(
        *(
            TransitionSpec(trigger="update", sources=(status,), dest=status, roles=EDITORS,
                           effect=_set_value, fields=(VALUE,), label_ja="値の修正",
                           label_en="correct the value")
            for status in ("preliminary", "estimated")
        ),
        TransitionSpec(trigger="estimate", sources=("preliminary",), dest="estimated",
                       roles=EDITORS, effect=_set_value, fields=(VALUE,),
                       label_ja="推計値へ", label_en="estimate"),
        TransitionSpec(trigger="finalise", sources=("preliminary", "estimated"), dest="final",
                       roles=EDITORS, effect=_set_value, fields=(VALUE,),
                       label_ja="確定", label_en="finalise"),
        TransitionSpec(trigger="revise", sources=("final",), dest="final", roles=EDITORS,
                       effect=_set_value,
                       fields=(VALUE, FieldSpec(name="reason", type="str", required=True)),
                       label_ja="確定値の改定", label_en="revise a final value"),
    ),
    create=CreateSpec(
        roles=EDITORS,
        fields=(
            FieldSpec(name="municipality", type="str", required=True),
            FieldSpec(name="year", type="int", required=True, minimum=1990, maximum=2999),
            FieldSpec(name="sector", type="str", required=True),
            VALUE,
            FieldSpec(name="status", type="str", required=True, choices=STATUSES),
        ),
        initial=lambda data: str(data["status"]),
        initial_states=STATUSES,
        scope=lambda data: (validate_municipality_code(data["municipality"]),),
        fiscal_year=lambda data: int(data["year"]),
        key_of=lambda data: f"{data['municipality']}:{data['year']}:{data['sector']}",
    ),
)
