"""MkDocs hooks: the parts of the site that are generated from the code at build time.

- every ``<!-- diagram:NAME -->`` block is regenerated from the workflow definition;
- ``reference/api.md`` is built from the docstrings of ``pdca.__all__``;
- ``reference/plan-file.md`` from the docstring of ``pdca.plans``;
- the command reference of ``cli.md`` from the commands themselves.
"""

from __future__ import annotations

import inspect
import re
from typing import Any


def _diagrams(markdown: str) -> str:
    from pdca.workflows import default_registry
    from pdca.workflows.diagram import mermaid

    registry = default_registry()

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"<!-- diagram:{name} -->\n```mermaid\n{mermaid(registry.get(name))}```"

    return re.sub(r"<!-- diagram:(\w+) -->\n```mermaid\n.*?```", replace, markdown, flags=re.S)


def _api() -> str:
    import pdca

    out = ["# Python API\n",
           "Generated from the docstrings of what `pdca` exports (`pdca.__all__`).\n"]
    for name in sorted(n for n in pdca.__all__ if not n.startswith("_")):
        obj = getattr(pdca, name)
        out.append(f"## `pdca.{name}`\n")
        doc = inspect.getdoc(obj) or ""
        if inspect.isclass(obj):
            out.append(f"```python\nclass {name}\n```\n")
            out.append(doc + "\n")
            members: dict[str, Any] = {}
            for klass in reversed(obj.__mro__):
                if klass.__module__.startswith("pdca"):
                    members.update(vars(klass))
            for attr, member in sorted(members.items()):
                if attr.startswith("_") or not (inspect.isfunction(member)
                                                or isinstance(member, (classmethod, property))):
                    continue
                func = member.__func__ if isinstance(member, classmethod) else member
                if isinstance(func, property):
                    out.append(f"### `{name}.{attr}` (property)\n\n{inspect.getdoc(func) or ''}\n")
                    continue
                try:
                    signature = str(inspect.signature(func))
                except (TypeError, ValueError):
                    signature = "(...)"
                out.append(f"### `{name}.{attr}{signature}`\n\n{inspect.getdoc(func) or ''}\n")
        elif isinstance(obj, str):
            out.append(f"`{obj!r}`\n")
        else:
            out.append(doc + "\n")
    return "\n".join(out)


def _plan_file() -> str:
    import pdca.plans

    doc = inspect.getdoc(pdca.plans) or ""
    return ("# The plan file\n\nGenerated from the docstring of `pdca.plans`.\n\n"
            "```text\n" + doc + "\n```\n")


def _cli(markdown: str) -> str:
    from pdca.cli import reference_markdown

    head, sep, rest = markdown.partition("<!-- reference:start -->\n")
    if not sep:
        return markdown
    _, _, tail = rest.partition("<!-- reference:end -->")
    return head + sep + reference_markdown() + "<!-- reference:end -->" + tail


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    path = page.file.src_uri
    if path == "reference/api.md":
        return _api()
    if path == "reference/plan-file.md":
        return _plan_file()
    if path == "cli.md":
        markdown = _cli(markdown)
    return _diagrams(markdown)
