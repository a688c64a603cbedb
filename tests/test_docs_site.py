"""The documentation site (mkdocs.yml): it builds with warnings as errors, its generated
references match the code, and every example meant to run is run by a test."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from doc_blocks import RUNNABLE_LANGUAGES, fenced, marked_name, pages, runnable_blocks

from autoshuikou.cli import EXAMPLES, _parser
from autoshuikou.study.config import SearchConfig, read_config_file

ROOT = Path(__file__).parents[1]
# Each runnable block of the pages, and the test file that runs it (with `block("name")`).
RUN_BY = {
    "my_task.py": "test_readme.py",
    "search_my_task.py": "test_readme.py",
    "use_model.py": "test_readme.py",
    "my_space.yaml": "test_readme.py",
    "my_encoder.py": "test_encoder_e2e.py",
}


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reference", ROOT / "docs/hooks/reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("material", reason="the docs site needs the dev extra (mkdocs-material)")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    return {"": parser, **_hooks().subcommands(parser)}


def test_site_builds_strict_with_every_page(site: Path) -> None:
    for page in ("getting-started", "own-model", "search", "workers", "compare", "runtimes"):
        assert (site / page / "index.html").is_file(), page
    results = site / "results"
    for page in ("classifiers", "encoders", "detectors", "strategies", "cheaper-trials"):
        assert (results / page / "index.html").is_file(), page
    assert "The three numbers" in (results / "index.html").read_text()
    assert "Default search" in (results / "classifiers" / "index.html").read_text()
    api = (site / "reference" / "api" / "index.html").read_text()
    for name in ("Task", "load", "ModelFamily", "student"):
        assert name in api, name
    assert "fonts.googleapis.com" not in (site / "index.html").read_text()  # offline


def test_cli_reference_lists_every_flag_of_every_command(site: Path) -> None:
    text = _hooks().cli_reference()
    html = (site / "reference" / "cli" / "index.html").read_text()
    sections = re.split(r"(?m)^## `autoshuikou (\w+)`", text)
    by_command = {"": sections[0], **dict(zip(sections[1::2], sections[2::2], strict=True))}
    for name, command in _commands().items():
        assert name in by_command, f"no section for {name}"
        assert f"autoshuikou {name}".strip() in html
        for action in command._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            for flag in action.option_strings or [action.dest]:
                assert f"`{flag}" in by_command[name], f"{name}: {flag}"
                assert flag in html, f"{name}: {flag}"
        if name:
            assert EXAMPLES[name] in by_command[name]


def test_config_reference_lists_every_setting_and_its_example_is_valid(tmp_path: Path) -> None:
    text = _hooks().config_reference()
    for field in SearchConfig.__dataclass_fields__:
        assert f"| `{field}` |" in text, field
    example = next(code for lang, code in fenced(text) if lang == "yaml")
    file = tmp_path / "run.yaml"
    file.write_text(example)
    SearchConfig(**read_config_file(file))


def test_help_opens_for_users_and_every_command_shows_an_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from autoshuikou import cli

    for name in _commands():
        with pytest.raises(SystemExit):
            cli.main([name, "--help"] if name else ["--help"])
        out = capsys.readouterr().out
        assert (cli.__doc__ or "").split(":")[0] not in out
        if name:
            assert out.rstrip().endswith(EXAMPLES[name].splitlines()[-1])


def test_every_runnable_block_is_marked_and_run_by_a_test() -> None:
    for page in pages():
        for language, code in fenced(page.read_text()):
            if language in RUNNABLE_LANGUAGES:
                assert marked_name(code), f"{page.name}: a {language} block without its name"
    blocks = runnable_blocks()
    assert set(blocks) == set(RUN_BY)
    for name, test_file in RUN_BY.items():
        assert f'block("{name}")' in (ROOT / "tests" / test_file).read_text(), name
        if name.endswith(".yaml"):
            yaml.safe_load(blocks[name][1])
        else:
            compile(blocks[name][1], name, "exec")
