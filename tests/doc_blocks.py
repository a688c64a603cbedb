"""The code blocks of the README and the docs pages that are meant to run, by name.

A runnable block is marked by its first line, a comment naming it as a file:
``# my_task.py -- run: ...`` (Python) or ``# my_space.yaml -- run: ...`` (YAML). Every
Python and YAML block of the pages must be so marked, and every marked block is run by a
test (tests/test_docs_site.py checks both), so an example in the docs cannot rot.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
RUNNABLE_LANGUAGES = ("python", "yaml")
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
_MARK = re.compile(r"# ([\w.-]+\.(?:py|yaml)) -- ")


def pages() -> list[Path]:
    """The README and every Markdown page of the docs site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def fenced(text: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block with a language, in order."""
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(text)]


def marked_name(code: str) -> str | None:
    """The file name a runnable block's first line gives it, or None."""
    match = _MARK.match(code)
    return match.group(1) if match else None


def runnable_blocks() -> dict[str, tuple[Path, str]]:
    """Every marked block of the pages: name -> (page, code)."""
    found: dict[str, tuple[Path, str]] = {}
    for page in pages():
        for language, code in fenced(page.read_text()):
            name = marked_name(code)
            if language in RUNNABLE_LANGUAGES and name is not None:
                assert name not in found, f"{name} is marked twice ({found[name][0]}, {page})"
                found[name] = (page, code)
    return found


def block(name: str) -> str:
    """The code of the runnable block named ``name`` (e.g. "my_task.py")."""
    return runnable_blocks()[name][1]
