"""Command line: a table of commands, each parse -> call -> print, returning an exit code."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

from autoshuikou.compare.strategies import DEFAULT_STRATEGIES
from autoshuikou.errors import UserError
from autoshuikou.interrupt import install_handlers
from autoshuikou.measure.latency import (
    REMEASURE_MAX_WINDOWS,
    REMEASURE_MIN_WINDOWS,
    REMEASURE_SECONDS,
)
from autoshuikou.runtimes import runtime_names
from autoshuikou.study.config import CONFIG_NAME, DEFAULTS, SearchConfig

DEVICE_HELP = (
    "where fine-tuning runs: auto (CUDA when available, default), cpu, cuda; latency is "
    "always timed in the runtime on the CPU"
)
EXIT_USER_ERROR = 2
EXIT_NO_FEASIBLE = 3
EXIT_INTERRUPTED = 130

# `search` flags that switch a SearchConfig field off; every other flag is a field itself.
NEGATED = {"no_warm_start": "warm_start"}

# What `autoshuikou --help` opens with (the module docstring is for maintainers).
DESCRIPTION = (
    "Search per-layer compression plans (pruning, int8, distillation) for a trained PyTorch "
    "model under a latency budget measured on this machine, and keep the Pareto-optimal "
    "compressed models as deployable files. Start with: autoshuikou search --budget 50%"
)
EPILOG = "Each command has its own help and an example: autoshuikou search --help"
# One example per command, shown at the end of its --help.
EXAMPLES = {
    "search": "example:\n  autoshuikou search --budget 50%\n"
    "  autoshuikou search --task my_task.py:make_task --budget 60% --trials 30",
    "compare": "example:\n  autoshuikou compare --budget 50% --seeds 3 --strategies tpe-warm,random",
    "status": "example:\n  autoshuikou status runs/digits-50pct",
    "profile": "example:\n  autoshuikou profile --task digits",
    "show": "example:\n  autoshuikou show runs/digits-50pct",
    "export": "example:\n  autoshuikou export runs/digits-50pct --best --out digits-small",
    "layers": "example:\n  autoshuikou layers --task digits",
    "verify": "example:\n  autoshuikou verify runs/digits-50pct",
}


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The settings `autoshuikou search` was given (tests/test_objectives_record.py checks
    that every flag arrives)."""
    given = vars(args)
    settings = {f.name: given[f.name] for f in fields(SearchConfig) if f.name in given}
    settings.update({field: not given[flag] for flag, field in NEGATED.items()})
    return SearchConfig(**settings)


def _search(args: argparse.Namespace) -> int:
    from autoshuikou.report.summary import format_table
    from autoshuikou.study.search import search

    result = search(config=search_config(args))
    print(format_table(result.summary))
    return 0 if result.feasible else EXIT_NO_FEASIBLE


def _compare(args: argparse.Namespace) -> int:
    from autoshuikou.compare.run import compare

    compare(
        task=args.task,
        budget=args.budget,
        trials=args.trials,
        seeds=args.seeds,
        out=args.out,
        strategies=args.strategies,
        space=args.space,
        measure_seconds=args.measure_seconds,
        runtime=args.runtime,
        device=args.device,
    )
    return 0


def _profile(args: argparse.Namespace) -> int:
    from autoshuikou.study.profile import profile

    model, path = profile(
        args.task, args.space, Path(args.out), args.threads, args.probes, args.runtime
    )
    print(
        f"latency model ({model.kind}, {model.probes} probes): cross-validated median error "
        f"{model.holdout_mape:.1%}, 90th percentile {model.holdout_p90:.1%}\ncached at {path}"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from autoshuikou.report.status import study_status

    print(study_status(args.run_dir, args.storage, args.study_name))
    return 0


def _show(args: argparse.Namespace) -> int:
    from autoshuikou.report.summary import artifact_problems, format_table, load_summary

    run_dir = Path(args.run_dir)
    summary = load_summary(run_dir)
    print(format_table(summary))
    config = run_dir / CONFIG_NAME
    if config.is_file():
        from autoshuikou.secrets import redact_url
        from autoshuikou.study.config import config_text_without_password

        # An older run's config.yaml may hold the database password: never shown.
        text = config_text_without_password(config.read_text(), redact_url)
        print(f"\nsettings ({config}; rerun with `autoshuikou search --config {config}`):")
        print("\n".join(f"  {line}" for line in text.splitlines() if not line.startswith("#")))
    problems = artifact_problems(run_dir, summary)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if problems:
        return 1
    return 0 if summary["pareto"] else EXIT_NO_FEASIBLE


def _export(args: argparse.Namespace) -> int:
    from autoshuikou.deploy import export_run

    out = export_run(Path(args.run_dir), Path(args.out), args.trial)
    print(f"exported to {out} (README.md says how to run it)")
    return 0


def _layers(args: argparse.Namespace) -> int:
    from autoshuikou.compress.prune import channel_groups, head_pruning_notes
    from autoshuikou.study.prepare import layer_names
    from autoshuikou.tasks import task_for

    given = vars(args)
    task = task_for(
        SearchConfig(**{f.name: given[f.name] for f in fields(SearchConfig) if f.name in given})
    )
    print(f"task {task.name} ({task.family}): input {task.input_shape}")
    for note in head_pruning_notes(task.model):
        print(note)
    print("channel groups (prune rules match any layer in a group):")
    for group in channel_groups(task.model.eval(), task.inputs, task.family_impl):
        print(
            f"  {group.name:<28} {group.channels:>5} {group.unit:<8}  layers: {', '.join(group.layers)}"
        )
    print("layers (precision rules):")
    for layer in layer_names(task):
        print(f"  {layer}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from autoshuikou.report.verify import verify_run

    rows = verify_run(Path(args.run_dir), args.task, seconds=args.seconds)
    checks = ("metric", "ratio", "counts")
    return 0 if rows and all(row[c] for row in rows for c in checks) else 1


RUNTIME_HELP = (
    "what runs and times the models: onnxruntime (default; ONNX, int8 via ORT) or torch "
    "(TorchScript, int8 via PyTorch's x86 kernels); the budget refers to it"
)


def _add_task_arguments(p: argparse.ArgumentParser) -> None:
    """What names the task: --task, or --model with --data (and how to read them)."""
    p.add_argument(
        "--task",
        default=DEFAULTS.task,
        help="built-in task name (default: digits), file.py:function or module:function",
    )
    p.add_argument(
        "--model",
        default=DEFAULTS.model,
        help="instead of --task: torchvision:NAME or timm:NAME (with --weights), hf:DIR (a local "
        "Hugging Face folder) or FILE.pt (a whole module of torch/torchvision classes)",
    )
    p.add_argument(
        "--weights",
        default=DEFAULTS.weights,
        help="the trained state dict for --model (or a checkpoint holding one); nothing is downloaded",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="no --weights: random ones, for timing studies (the metric then means nothing)",
    )
    p.add_argument(
        "--data",
        default=DEFAULTS.data,
        help="with --model: imagefolder:DIR (a subfolder per class; train/ and val/ if split), "
        "FILE.csv / FILE.tsv (text and label columns) or textfolder:DIR",
    )
    p.add_argument(
        "--input-size",
        default=DEFAULTS.input_size,
        help="images: N or HxW pixels (default: the images' own size)",
    )
    p.add_argument(
        "--normalize",
        default=DEFAULTS.normalize,
        help="images: imagenet (default), none, or MEAN/STD per channel, e.g. 0.5,0.5,0.5/0.5,0.5,0.5",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=DEFAULTS.max_length,
        help=f"text: tokens per sequence (default {DEFAULTS.max_length})",
    )


def _parser(search_defaults: dict[str, object] | None = None) -> argparse.ArgumentParser:
    """The command table; ``search_defaults`` (from --config) replace search's defaults, so
    a flag given on the command line still wins over the file."""
    from autoshuikou.study.fidelity import fidelity_names  # loads the search stack

    parser = argparse.ArgumentParser(prog="autoshuikou", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--verbose", action="store_true", help="show tracebacks and library logs")
    commands = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )

    def command(name: str, help: str) -> argparse.ArgumentParser:
        """A subcommand whose --help says what it does and ends with an example."""
        return commands.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    s = command("search", help="search compression plans under a latency budget")
    _add_task_arguments(s)
    s.add_argument(
        "--config",
        default=None,
        help="YAML file of settings (keys as the flags below); flags given here override it; "
        "every run writes its own as runs/<study>/config.yaml",
    )
    s.add_argument(
        "--budget",
        default=DEFAULTS.budget,
        help='latency budget: "75ms", "0.8ms", or "50%%" of the fp32 baseline (default 50%%)',
    )
    s.add_argument(
        "--trials",
        type=int,
        default=DEFAULTS.trials,
        help="plans to evaluate, in total: trained and measured, or screened out after a short "
        "fine-tune; plans rejected on latency before any training do not count "
        f"(default {DEFAULTS.trials})",
    )
    s.add_argument(
        "--timeout",
        type=float,
        default=DEFAULTS.timeout,
        help="stop starting new trials after this many seconds",
    )
    s.add_argument(
        "--wait-timeout",
        type=float,
        default=DEFAULTS.wait_timeout,
        help="when the remaining trials run on other workers, wait for them at most this "
        "many seconds (a worker whose heartbeat stops is given up well before)",
    )
    s.add_argument(
        "--space",
        default=DEFAULTS.space,
        help="search-space YAML (default: the shipped default.yaml)",
    )
    s.add_argument("--seed", type=int, default=DEFAULTS.seed)
    s.add_argument(
        "--study-name",
        default=DEFAULTS.study_name,
        help="default: <task>-<budget>; the same name resumes",
    )
    s.add_argument(
        "--out", default=DEFAULTS.out, help=f"directory for run outputs (default {DEFAULTS.out}/)"
    )
    s.add_argument(
        "--threads",
        type=int,
        default=DEFAULTS.threads,
        help=f"ONNX Runtime intra-op threads for latency (default {DEFAULTS.threads})",
    )
    s.add_argument(
        "--min-accuracy",
        default=DEFAULTS.min_accuracy,
        help='optional floor on the metric: absolute (0.97) or "99%%" of baseline',
    )
    s.add_argument(
        "--measure-seconds",
        type=float,
        default=DEFAULTS.measure_seconds,
        help=f"timing per trial, candidate and baseline interleaved (default {DEFAULTS.measure_seconds}); "
        "with --fidelity predict or screen a quarter of it, on the plan's untrained build",
    )
    s.add_argument(
        "--fidelity",
        default=DEFAULTS.fidelity,
        choices=fidelity_names(),
        help="predict: time each plan untrained, predict its trained metric from its score "
        "after BatchNorm recalibration (a predictor fitted on the trained plans), train "
        "fully only those that could join the front; screen: decide that from its score "
        "after half an epoch of fine-tuning; full: train every plan; auto (default): "
        "predict where the model has BatchNorm, screen where it has none",
    )
    s.add_argument(
        "--predict",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.predict,
        help="reject plans by a latency model learned on this machine (profiled once, cached) "
        "before they are built; for models whose artifacts take long to build (default off: "
        "each plan's untrained artifact is timed instead)",
    )
    s.add_argument(
        "--refine",
        type=int,
        default=DEFAULTS.refine,
        help="after the trials, train this many front models again, longer (the best "
        "feasible one, then each next at least 10%% faster); 0: none; default: the space's "
        "refine.models, else 2",
    )
    s.add_argument(
        "--refine-epochs",
        type=int,
        default=DEFAULTS.refine_epochs,
        help="epochs of each refinement (default: the space's refine.epochs, else 3x the "
        "longest search fine-tuning, at least 250 optimizer steps, at most 60 epochs); "
        "raising it on a finished run refines its models again, longer",
    )
    s.add_argument("--device", default=DEFAULTS.device, help=DEVICE_HELP)
    s.add_argument(
        "--teacher-cache-mb",
        type=int,
        default=DEFAULTS.teacher_cache_mb,
        help="keep the teacher's outputs on training batches across trials, up to this many "
        "MB: every trial sees the same batches, so the teacher's forward pass runs once per "
        f"batch, not once per trial (default {DEFAULTS.teacher_cache_mb}; 0: run it every step)",
    )
    s.add_argument(
        "--storage",
        default=DEFAULTS.storage,
        help="postgresql://user@host/db to share the study between machines (the password "
        "from PGPASSWORD, ~/.pgpass or a service file; one in the URL is never written "
        "down), or a .journal path (default: runs/<study>/study.journal)",
    )
    s.add_argument(
        "--runtime", default=DEFAULTS.runtime, choices=runtime_names(), help=RUNTIME_HELP
    )
    s.add_argument(
        "--no-warm-start",
        action="store_true",
        help="do not begin with the uniform plans (25/50/75%% pruned everywhere, fp32 and int8)",
    )
    s.add_argument(
        "--energy-objective",
        action="store_true",
        help="minimize energy per inference as a fourth objective (needs readable RAPL counters)",
    )
    s.set_defaults(run=_search)
    if search_defaults:
        s.set_defaults(**search_defaults)

    c = command(
        "compare", help="run search strategies and fixed baselines side by side, over seeds"
    )
    c.add_argument("--task", default=None, help="as for search (default: digits)")
    c.add_argument("--budget", default=DEFAULTS.budget, help="as for search (default 50%%)")
    c.add_argument(
        "--trials",
        type=int,
        default=DEFAULTS.trials,
        help=f"trials per study (default {DEFAULTS.trials})",
    )
    c.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per strategy (default 3)")
    c.add_argument(
        "--strategies",
        default=DEFAULT_STRATEGIES,
        help=f"comma-separated NAME or NAME:TRIALS (default {DEFAULT_STRATEGIES}); names: "
        "tpe-warm (what search runs: TPE started from the uniform plans, --fidelity auto "
        "deciding what to train), screening (tpe-warm deciding at a rung of half an "
        "epoch), predictor (tpe-warm with --fidelity predict, whatever the default), "
        "full-fidelity (tpe-warm training every plan, with the latency model and no teacher "
        "cache: the default before issue 13), tpe, nsga2, random, "
        "gp (samplers from scratch), no-distill (tpe-warm without fine-tuning), uniform (same "
        "prune ratio everywhere, fp32 and int8, no search)",
    )
    c.add_argument("--space", default=None, help="search-space YAML (default: the shipped one)")
    c.add_argument(
        "--out", default="runs/compare", help="report and studies (default runs/compare)"
    )
    c.add_argument("--measure-seconds", type=float, default=DEFAULTS.measure_seconds)
    c.add_argument("--device", default=DEFAULTS.device, help=DEVICE_HELP)
    c.add_argument(
        "--runtime", default=DEFAULTS.runtime, choices=runtime_names(), help=RUNTIME_HELP
    )
    c.set_defaults(run=_compare)

    st = command("status", help="trials done/running/failed, workers and best so far")
    st.add_argument("run_dir", nargs="?", default=None, help="runs/<study> (journal storage)")
    st.add_argument("--storage", default=None, help="the database URL the workers use")
    st.add_argument("--study-name", default=None)
    st.set_defaults(run=_status)

    pr = command("profile", help="learn this machine's latency model for a task (cached)")
    pr.add_argument("--task", default=None)
    pr.add_argument("--space", default=None)
    pr.add_argument("--threads", type=int, default=DEFAULTS.threads)
    pr.add_argument("--out", default="runs", help="the baseline is kept under OUT/<task>-profile/")
    pr.add_argument(
        "--probes",
        type=int,
        default=None,
        help="random plans to time (default: 60, or 5 per layer for deeper models)",
    )
    pr.add_argument(
        "--runtime", default=DEFAULTS.runtime, choices=runtime_names(), help=RUNTIME_HELP
    )
    pr.set_defaults(run=_profile)

    sh = command("show", help="print the summary of a finished run")
    sh.add_argument("run_dir")
    sh.set_defaults(run=_show)

    ex = command(
        "export", help="copy one model of a run, with its student, plan and a README, to a folder"
    )
    ex.add_argument("run_dir")
    which = ex.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, default=None, help="a Pareto-optimal trial's number")
    which.add_argument(
        "--best",
        action="store_true",
        help="the feasible model with the highest metric, then the fastest (the default)",
    )
    ex.add_argument("--out", required=True, help="a new (or empty) folder")
    ex.set_defaults(run=_export)

    la = command(
        "layers", help="list a task's channel groups and layers, for writing search spaces"
    )
    _add_task_arguments(la)
    la.set_defaults(run=_layers)

    v = command(
        "verify", help="re-measure a run's Pareto models against its baseline in a fresh process"
    )
    v.add_argument("run_dir")
    v.add_argument("--task", default=None, help="the task the run used (default: the one recorded)")
    v.add_argument(
        "--seconds",
        type=float,
        default=REMEASURE_SECONDS,
        help=f"length of each timing window; {REMEASURE_MIN_WINDOWS} to {REMEASURE_MAX_WINDOWS} "
        f"windows per model (default {REMEASURE_SECONDS})",
    )
    v.set_defaults(run=_verify)
    return parser


def _file_defaults(path: str) -> dict[str, object]:
    """A --config file's settings as search's argument defaults."""
    from autoshuikou.study.config import read_config_file

    values: dict[str, object] = dict(read_config_file(path))
    for flag, field in NEGATED.items():
        if field in values:
            values[flag] = not values.pop(field)
    return values


EXIT_OS_ERROR = 1
_NO_SPACE = ("ENOSPC", "EDQUOT", "EFBIG")
_NOT_WRITABLE = ("EROFS", "EACCES", "EPERM")
RESUMES = "then rerun the same command: the study resumes where it stopped"


def _os_cause(exc: BaseException) -> OSError | None:
    """``exc`` if an OSError, else a full-disk or read-only OSError it was raised while
    handling: a full disk makes other code fail on the way up (Optuna's bookkeeping of a
    trial whose end it could not write asserts), and the disk is what to fix."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and (
            cause is exc or _errno_name(cause) in _NO_SPACE + _NOT_WRITABLE
        ):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _errno_name(exc: OSError) -> str:
    import errno

    return errno.errorcode.get(exc.errno or 0, "")


def _os_error(exc: OSError) -> UserError:
    """An OSError that reached the top (a full disk, a read-only folder...) as one message:
    what failed, on which file, and how to go on."""
    name = _errno_name(exc)
    what = exc.strerror or str(exc) or type(exc).__name__
    files = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    if files:
        what += f": {' -> '.join(files)}"
    if name in _NO_SPACE:
        how = f"free space (or raise the quota or file-size limit), or give --out on another disk, {RESUMES}"
    elif name in _NOT_WRITABLE:
        how = f"make the folder writable, or give --out on a writable disk, {RESUMES}"
    elif name == "ENOENT":
        how = f"check the path (restore the file if a run's file was moved or deleted), {RESUMES}"
    else:
        how = f"fix the cause, {RESUMES}"
    return UserError(what, how)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "config", None):
        try:
            args = _parser(_file_defaults(args.config)).parse_args(argv)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
    if not args.verbose:
        import warnings

        import optuna

        warnings.filterwarnings("ignore")
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        logging.getLogger().setLevel(logging.ERROR)
    run: Callable[[argparse.Namespace], int] = args.run
    install_handlers()
    try:
        return run(args)
    except UserError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # an OSError (a full disk...) is one message: the run resumes
        cause = _os_cause(exc)
        if cause is None:
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"error: {_os_error(cause)}", file=sys.stderr)
        return EXIT_OS_ERROR
    except KeyboardInterrupt:
        # SIGTERM arrives here too (see autoshuikou.interrupt): the running trial is marked failed.
        print(
            "\ninterrupted: finished trials are saved; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
