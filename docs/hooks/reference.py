"""MkDocs hook: the CLI and configuration references, generated at build time from the code.

``cli_reference()`` reads the argparse parser of ``autoshuikou.cli`` and
``config_reference()`` the ``SearchConfig`` dataclass, so neither page can drift from
what the program accepts; nothing generated is committed (tests/test_docs_site.py checks
the CLI page against the parser).
"""

from __future__ import annotations

import argparse
import ast
import io
import tokenize
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

CLI_PAGE = "reference/cli.md"
CONFIG_PAGE = "reference/config.md"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _text(text: str) -> str:
    """Prose safe inside a table cell: ``<study>`` shown, not taken for an HTML tag."""
    return (
        _cell(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("*", "\\*")
    )


def _code(value: str) -> str:
    return f"`{value}`" if value else ""


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's commands by name, in the order ``--help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each command's one-line help, as the top-level ``--help`` shows it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every argument of ``parser`` a user can give (not ``-h`` or the command list)."""
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
    ]


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if not action.option_strings:
        return "" if action.nargs == "?" and action.default is None else "required"
    if isinstance(
        action,
        argparse._StoreTrueAction | argparse._StoreFalseAction | argparse.BooleanOptionalAction,
    ):
        return "off" if action.default is False else "on"
    if action.default is None or action.default is argparse.SUPPRESS:
        return ""
    return str(action.default)


def _name(action: argparse.Action) -> str:
    """The argument as Markdown: each of its flags in code, with its value's name."""
    if not action.option_strings:
        return f"`{action.dest}`"
    value = "" if action.nargs == 0 else f" {action.metavar or str(action.dest).upper()}"
    return ", ".join(f"`{flag}{value}`" for flag in action.option_strings)


def _arguments_table(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = ["| argument | default | what it does |", "| --- | --- | --- |"]
    for action in arguments(parser):
        text = formatter._expand_help(action) if action.help else ""
        if action.choices is not None and not isinstance(action.choices, dict):
            text += f" (one of: {', '.join(map(str, action.choices))})"
        rows.append(f"| {_name(action)} | {_code(_cell(_default(action)))} | {_text(text)} |")
    return rows


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """Markdown for every command of ``autoshuikou`` and every flag: name, default, help."""
    if parser is None:
        from autoshuikou.cli import _parser

        parser = _parser()
    lines = [
        "# Command line reference",
        "",
        "Generated from the program's own argument parser when this site is built, so it",
        "lists exactly what `autoshuikou --help` and each `autoshuikou COMMAND --help` say.",
        "",
        f"```text\n{parser.format_usage().strip()}\n```",
        "",
        _text(parser.description or ""),
        "",
        *_arguments_table(parser),
        "",
    ]
    helps = _help_of(parser)
    for name, command in subcommands(parser).items():
        lines += [
            f"## `autoshuikou {name}`",
            "",
            _text(helps.get(name, "")),
            "",
            f"```text\n{command.format_usage().strip()}\n```",
            "",
            *_arguments_table(command),
            "",
        ]
        if command.epilog:
            lines += [f"```text\n{command.epilog.strip()}\n```", ""]
    return "\n".join(lines)


def _field_comments(source: str, class_name: str) -> dict[str, str]:
    """Each dataclass field's source comment: on its own line (the comment lines right
    above it), else the comment that ends it."""
    tree = ast.parse(source)
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name)
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        row = node.lineno - 1
        while row >= 1 and lines[row - 1].strip().startswith("#"):
            above.insert(0, comments[row])
            row -= 1
        found[node.target.id] = " ".join(above) or comments.get(node.lineno, "")
    return found


def _yaml_value(value: Any) -> str:
    import yaml

    if isinstance(value, Path):
        value = str(value)
    text: str = yaml.safe_dump(value, default_flow_style=True).strip()
    return text.removesuffix("...").strip()


def config_reference() -> str:
    """Markdown for every setting of a search: ``SearchConfig``'s fields, their types and
    defaults, the flag that sets each and what it does (the flag's help, else the field's
    comment in autoshuikou/study/config.py)."""
    from autoshuikou.cli import _parser
    from autoshuikou.study import config

    search = subcommands(_parser())["search"]
    formatter = search._get_formatter()
    flags = {
        str(a.dest): a
        for a in arguments(search)
        if a.option_strings and not str(a.dest).startswith("no_")
    }
    negated = {a.dest: a for a in arguments(search) if str(a.dest).startswith("no_")}
    source = Path(config.__file__).read_text()
    comments = _field_comments(source, "SearchConfig")
    rows = ["| setting | type | default | flag | what it does |", "| --- | --- | --- | --- | --- |"]
    for field in fields(config.SearchConfig):
        default = field.default if field.default is not MISSING else None
        flag = flags.get(field.name) or negated.get(f"no_{field.name}")
        if flag is not None and flag.help:
            text = formatter._expand_help(flag)
            name = flag.option_strings[0]
        else:
            text, name = comments.get(field.name, ""), ""
        rows.append(
            f"| `{field.name}` | `{_cell(str(field.type))}` | `{_cell(_yaml_value(default))}` "
            f"| {_code(name)} | {_text(text)} |"
        )
    return "\n".join(
        [
            "# Configuration reference",
            "",
            "Every setting of a search, generated from `SearchConfig`",
            "(`autoshuikou/study/config.py`) when this site is built. A run config",
            "(`autoshuikou search --config run.yaml`) takes these keys (`-` or `_`); a flag given",
            "on the command line wins over the file. Every run writes its resolved settings to",
            "`runs/<study>/config.yaml`, and `autoshuikou search --config runs/<study>/config.yaml`",
            "resumes that very study. Defaults are shown as they are written in YAML (`null`:",
            "unset). Settings without a flag are set from a config file or the Python API",
            "(`autoshuikou.search(task, **settings)`).",
            "",
            "```yaml",
            "# run.yaml",
            "budget: 40%",
            "trials: 50",
            "fidelity: auto",
            "```",
            "",
            *rows,
            "",
        ]
    )


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the site (they exist only in the build)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    files.append(File.generated(config, CONFIG_PAGE, content=config_reference()))
    return files
