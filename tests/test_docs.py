"""The docs stay true: generated parts match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pdca.workflows import default_registry
from pdca.workflows.diagram import mermaid

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _diagrams(text: str) -> dict[str, str]:
    pattern = re.compile(r"<!-- diagram:(\w+) -->\n```mermaid\n(.*?)```", re.S)
    return dict(pattern.findall(text))


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_workflow_diagrams_in_the_docs_are_generated_from_the_code(page: str) -> None:
    registry = default_registry()
    for name, body in _diagrams((DOCS / page).read_text(encoding="utf-8")).items():
        assert body == mermaid(registry.get(name)), f"regenerate with: pdca diagram {name}"


def test_architecture_page_shows_the_measure_workflow() -> None:
    assert "measure" in _diagrams((DOCS / "architecture.md").read_text(encoding="utf-8"))


def test_concepts_page_has_a_diagram_of_every_workflow() -> None:
    shown = _diagrams((DOCS / "concepts.md").read_text(encoding="utf-8"))
    assert set(shown) == {w.name for w in default_registry()}


def test_cli_reference_is_generated_from_the_commands() -> None:
    from pdca.cli import reference_markdown

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    generated = text.split("<!-- reference:start -->\n", 1)[1].split("<!-- reference:end -->")[0]
    assert generated == reference_markdown(), "regenerate docs/cli.md's reference section"


def test_every_command_has_a_section_in_the_cli_page() -> None:
    import click

    from pdca.cli import main

    def names(group: click.Group, prefix: str) -> list[str]:
        out = []
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                out += names(command, f"{prefix} {name}")
            else:
                out.append(f"{prefix} {name}")
        return out

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name in names(main, "pdca"):
        assert f"### `{name}`" in text, name
