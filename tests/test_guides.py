"""The getting-started page and the staff guides run, command by command, as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP = Path(__file__).resolve().parent / "_guide_setup.py"
RUNNABLE = ["getting-started.md", "staff-guide.md", "staff-guide.ja.md"]
# The README's quick start is run by CI itself (it installs), not here.
INSTALLING = re.compile(r"pip install")


def script_of(page: str) -> str:
    """The page's ``sh`` blocks as one bash script; ``<!-- setup: NAME -->`` markers
    become a call of tests/_guide_setup.py at that point."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    parts = ["set -euo pipefail"]
    for match in re.finditer(r"<!-- setup: ([\w-]+) -->|```sh\n(.*?)```", text, flags=re.S):
        if match.group(1):
            parts.append(f'"$PY" "$SETUP" {match.group(1)} "$PDCA_DATABASE_URL"')
        elif not INSTALLING.search(match.group(2)):
            parts.append(match.group(2))
    return "\n".join(parts) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE)
def test_every_command_of_the_guide_runs(page: str, tmp_path: Path) -> None:
    for sample in ("sample-measures.csv", "sample-emissions.csv"):
        shutil.copy(ROOT / "examples" / sample, tmp_path / sample)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDCA_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PY=sys.executable,
        SETUP=str(SETUP),
        PYTHONPATH=str(ROOT),
        PDCA_LANG="en",
    )
    result = subprocess.run(["bash", "-c", script_of(page)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_guides_in_both_languages_run_the_same_commands() -> None:
    assert script_of("staff-guide.md") == script_of("staff-guide.ja.md")
