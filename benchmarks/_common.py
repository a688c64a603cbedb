"""What the benchmark suites share: subcommands, the machine header, Markdown tables.

A suite is a list of `Command`s handed to `main`: ``python benchmarks/<suite>.py`` alone lists
them with their approximate run times, ``python benchmarks/<suite>.py <command> [options]``
prints a header (machine, versions, date, the command line) and then runs the command, which
ends with its table in Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
if str(BENCHMARKS) not in sys.path:  # so "benchmarks/tasks.py:..." task specs import
    sys.path.insert(0, str(BENCHMARKS))


@dataclass(frozen=True)
class Command:
    """One subcommand of a suite."""

    name: str
    help: str  # one line: what it measures
    runtime: str  # approximate run time on the 2-vCPU development VM, e.g. "2 min"
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def header(title: str, prog: str) -> str:
    """Markdown lines naming the machine, the versions, the date and the command line."""
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f"; GPU {torch.cuda.get_device_name()}"
    except ImportError:
        pass
    now = datetime.datetime.now(datetime.UTC)
    command = " ".join(["python", prog, *sys.argv[1:]])
    return "\n".join(
        [
            f"## {title}",
            "",
            f"- machine: {cpu_model()}, {os.cpu_count()} cores{gpu}",
            f"- software: Python {platform.python_version()}, torch {_version('torch')}, "
            f"onnxruntime {_version('onnxruntime')}, optuna {_version('optuna')}",
            f"- date: {now:%Y-%m-%d %H:%M} UTC",
            f"- command: `{command}`",
            "",
        ]
    )


def table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; None prints as "-"."""
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        lines.append("| " + " | ".join("-" if v is None else str(v) for v in row) + " |")
    return "\n".join(lines)


def cli(args: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Runs ``autoshuikou ARGS`` in a fresh interpreter (its output goes to ours)."""
    return subprocess.run([sys.executable, "-m", "autoshuikou", *args], env=env).returncode


def build_parser(
    prog: str, description: str, commands: Sequence[Command]
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Without a command: list the commands and their approximate run times.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands:
        child = sub.add_parser(
            command.name,
            help=f"{command.help} (~{command.runtime})",
            description=f"{command.help}. Approximate run time: {command.runtime}.",
        )
        command.add_arguments(child)
    return parser


def listing(prog: str, description: str, commands: Sequence[Command]) -> str:
    width = max(len(c.name) for c in commands)
    lines = [description, "", f"usage: python {prog} COMMAND [options]   (COMMAND --help)", ""]
    lines += [f"  {c.name:<{width}}  ~{c.runtime:<8}  {c.help}" for c in commands]
    return "\n".join(lines)


def main(
    prog: str, description: str, commands: Sequence[Command], argv: Sequence[str] | None = None
) -> int:
    parser = build_parser(prog, description, commands)
    args = parser.parse_args(argv)
    if args.command is None:
        print(listing(prog, description, commands))
        return 0
    command = next(c for c in commands if c.name == args.command)
    print(header(f"{Path(prog).stem} {command.name}: {command.help}", prog), flush=True)
    return command.run(args) or 0
