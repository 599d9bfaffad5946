"""Mermaid state diagrams generated from workflow definitions (so docs cannot drift)."""

from __future__ import annotations

from .base import Workflow


def mermaid(workflow: Workflow, *, lang: str = "ja") -> str:
    """The workflow as a Mermaid ``stateDiagram-v2``, labelled in ``lang`` (ja or en).

    Time-based transitions are marked with ⏰; states an entity may be created in are
    entered from ``[*]``; final states lead to ``[*]``.
    """
    spec = workflow.spec
    lines = ["stateDiagram-v2"]
    for state in spec.states:
        label = state.label_ja if lang == "ja" else state.label_en
        lines.append(f'    state "{label} ({state.code})" as {state.code}')
    initial = spec.create.initial_states if spec.create else (spec.states[0].code,)
    for code in initial or (spec.states[0].code,):
        lines.append(f"    [*] --> {code}")
    for t in spec.transitions:
        label = t.trigger + (" ⏰" if t.time_based else "")
        for source in t.sources:
            lines.append(f"    {source} --> {t.dest}: {label}")
    for state in spec.states:
        if state.final:
            lines.append(f"    {state.code} --> [*]")
    return "\n".join(lines) + "\n"
