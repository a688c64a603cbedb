"""A search's settings, in one typed object: the CLI, the Python API, `compare` and
`profile` build or derive it, and every default lives here."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from autoshuikou.compress.teacher_cache import DEFAULT_MEGABYTES
from autoshuikou.errors import UserError
from autoshuikou.runtimes import DEFAULT_RUNTIME
from autoshuikou.secrets import redact_text, strip_password
from autoshuikou.study.budget import parse_budget
from autoshuikou.study.samplers import DEFAULT_SAMPLER


@dataclass(frozen=True)
class SearchConfig:
    """What `autoshuikou search` takes (see its --help and ``study.search.search``).

    Simple values are checked on construction, so a bad one is refused before any work.
    """

    task: str | None = None  # built-in name, file.py:function or module:function (None: digits)
    # Or, without code (see tasks.nocode): a model by name and data by path.
    model: str | None = None  # torchvision:NAME, timm:NAME, hf:DIR, FILE.pt
    weights: str | None = None  # state dict (or a checkpoint holding one) for torchvision/timm
    random_weights: bool = False  # no --weights: random ones, for timing studies only
    data: str | None = None  # imagefolder:DIR, FILE.csv / FILE.tsv, textfolder:DIR
    input_size: str | None = None  # images: N or HxW (None: the images' own size)
    normalize: str = "imagenet"  # images: imagenet, none, or MEAN/STD ("0.5,0.5,0.5/0.5,0.5,0.5")
    max_length: int = 128  # text: tokens per sequence
    budget: str = "50%"  # "75ms", "0.8ms", or "50%" of the fp32 baseline
    trials: int = 30  # trained and measured, in total over all workers
    space: str | Path | None = None  # search-space YAML (None: the shipped default.yaml)
    out: str | Path = "runs"
    study_name: str | None = None  # None: <task>-<budget>; the same name resumes
    seed: int = 0
    threads: int = 1  # intra-op threads for latency
    timeout: float | None = None  # seconds after which no new trial starts
    # Seconds a worker waits for trials that live workers run elsewhere before it gives up
    # (dead ones are given up after study.workers.GRACE_SECONDS without a heartbeat).
    wait_timeout: float = 3600.0
    min_accuracy: str | float | None = None  # absolute (0.97) or "99%" of the baseline
    measure_seconds: float = 1.0  # timing per trial, candidate and baseline interleaved
    # (a quarter of it, untrained, where the fidelity times plans before training)
    predict: bool = False  # reject plans by a learned latency model (profiled once) first
    # "predict": train fully only what a learned accuracy predictor says could join the
    # front; "screen": what could at a rung of half an epoch; "full": every plan; "auto":
    # predict where the model has BatchNorm (its signal), screen elsewhere
    fidelity: str = "auto"
    device: str = "auto"  # fine-tuning: auto (CUDA when available), cpu, cuda
    # The teacher's outputs on training batches kept across trials, up to this many MB
    # (compress.teacher_cache); 0: the teacher runs at every training step.
    teacher_cache_mb: int = DEFAULT_MEGABYTES
    # A plan that differs from one just trained only in precision takes that trial's student
    # instead of training the same one again (study.students); False: every plan trains.
    reuse_students: bool = True
    storage: str | None = None  # None: a journal under the run; a .journal path; postgresql://
    sampler: str = DEFAULT_SAMPLER  # Optuna sampler: tpe, nsga2, random or gp (study.samplers)
    final_remeasure: bool = True  # re-time the front at the end; false: search-time latencies
    runtime: str = DEFAULT_RUNTIME  # runs and times the artifacts; the budget refers to it
    warm_start: bool = True  # begin with the uniform plans
    refine: int | None = None  # front models trained longer after the search (None: the space's)
    refine_epochs: int | None = None  # and with how many epochs (None: the space's)
    energy_objective: bool = False  # minimize energy per inference as a fourth objective

    def __post_init__(self) -> None:
        parse_budget(self.budget)  # raises a UserError saying how to write one
        if self.trials < 1:
            raise UserError(f"--trials must be at least 1, got {self.trials}", "e.g. --trials 30")
        if self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}", "e.g. --threads 1")
        from autoshuikou.study.fidelity import fidelity_names  # the registry (study.fidelity)

        if self.fidelity not in fidelity_names():
            raise UserError(
                f"unknown --fidelity {self.fidelity!r}",
                f"give one of {', '.join(fidelity_names())}",
            )
        if self.task is not None and self.model is not None:
            raise UserError(
                f"--task {self.task} and --model {self.model} both name the model",
                "give --task (a built-in or file.py:function) or --model with --data, not both",
            )
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise UserError(
                f"--out {self.out} is a file, not a folder", "give a folder for the run's outputs"
            )
        if self.space is not None and not Path(self.space).is_file():
            raise UserError(f"--space {self.space}: no such file", "give a search-space YAML file")
        if self.refine is not None and self.refine < 0:
            raise UserError(f"--refine must be 0 or more, got {self.refine}", "e.g. --refine 2")
        if self.refine_epochs is not None and self.refine_epochs < 1:
            raise UserError(
                f"--refine-epochs must be at least 1, got {self.refine_epochs}",
                "e.g. --refine-epochs 60",
            )
        if self.teacher_cache_mb < 0:
            raise UserError(
                f"--teacher-cache-mb must be 0 or more, got {self.teacher_cache_mb}",
                "e.g. --teacher-cache-mb 1024, or 0 to run the teacher at every step",
            )
        if self.max_length < 1:
            raise UserError(f"--max-length must be at least 1, got {self.max_length}", "e.g. 128")
        if not self.wait_timeout > 0:
            raise UserError(
                f"--wait-timeout must be above 0, got {self.wait_timeout}",
                "e.g. --wait-timeout 600",
            )
        if not self.measure_seconds > 0:
            raise UserError(
                f"--measure-seconds must be above 0, got {self.measure_seconds}",
                "e.g. --measure-seconds 1.0 (shorter is noisier)",
            )


DEFAULTS = SearchConfig()


# --- run configs: every setting from a YAML file, and the resolved one written per run ---

CONFIG_NAME = "config.yaml"
# Settings that name files or folders: written absolute, so a config reruns from anywhere.
PATH_FIELDS = ("space", "out", "weights")


def _expected(name: str) -> tuple[type, ...]:
    kind = next(f.type for f in fields(SearchConfig) if f.name == name)
    text = str(kind)
    if text.startswith("bool"):
        return (bool,)
    if text.startswith("int"):
        return (int,)
    if text.startswith("float"):
        return (int, float)
    return (str, int, float, Path)  # strings; numbers are fine where a string is read


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings in a YAML run config (keys as the flags, with - or _), checked."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UserError(f"--config {path}: no such file", "give a YAML file of search settings")
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"--config {path} is not valid YAML: {exc}", "fix the YAML") from exc
    if not isinstance(values, dict):
        raise UserError(f"--config {path} is not a mapping of settings", "write key: value lines")
    known = {f.name for f in fields(SearchConfig)}
    settings: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            raise UserError(
                f"--config {path}: unknown setting {key!r}"
                + (f" (did you mean {close[0]!r}?)" if close else ""),
                f"settings are: {', '.join(sorted(known))}",
            )
        optional = next(f for f in fields(SearchConfig) if f.name == name).default is None
        allowed = _expected(name)
        if value is None and not optional:
            raise UserError(f"--config {path}: {key} cannot be empty", "give a value or drop it")
        if value is not None and (
            not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool))
        ):
            want = " or ".join(t.__name__ for t in allowed[:2])
            raise UserError(
                f"--config {path}: {key} is {value!r}, not a {want}", f"give {key} a {want}"
            )
        if allowed[0] is str and value is not None:
            value = str(value)
        settings[name] = value
    return settings


def _absolute(spec: str | None, prefixes: tuple[str, ...] = ()) -> str | None:
    """A path, or ``prefix:path``, made absolute; names that are not paths stay as they are."""
    if spec is None:
        return None
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in prefixes:
        return f"{prefix}:{Path(rest).resolve()}"
    if sep and (prefix.endswith(".py") or "/" in prefix):  # file.py:function
        return f"{Path(prefix).resolve()}:{rest}"
    if not sep and (Path(spec).suffix in (".pt", ".pth", ".csv", ".tsv", ".journal")):
        return str(Path(spec).resolve())
    return spec


def resolved_config(config: SearchConfig, study_name: str) -> dict[str, Any]:
    """Every setting of a run, paths absolute and the study named: rerunning it with
    ``--config`` joins (resumes) the very same study."""
    values = asdict(config)
    values["study_name"] = study_name
    for name in PATH_FIELDS:
        if values[name] is not None:
            values[name] = str(Path(values[name]).resolve())
    values["task"] = _absolute(config.task)
    values["model"] = _absolute(config.model, ("hf",))
    values["data"] = _absolute(config.data, ("imagefolder", "textfolder", "csv", "tsv"))
    if config.storage is not None and "://" not in config.storage:
        values["storage"] = str(Path(config.storage).resolve())
    elif config.storage is not None:
        values["storage"] = strip_password(config.storage)  # never written down
    return values


def write_config(run_dir: Path, values: dict[str, Any], note: str = "") -> Path:
    import yaml

    from autoshuikou.util import atomic_write_bytes

    storage = values.get("storage")
    if isinstance(storage, str) and "://" in storage:
        values = {**values, "storage": strip_password(storage)}
        note = f"{note}\n{PASSWORD_NOTE}".strip()
    header = (
        "# The resolved settings of this run. Rerun or resume it with:\n"
        f"#   autoshuikou search --config {(run_dir / CONFIG_NAME).resolve()}\n"
        + "".join(f"# {line}\n" for line in note.splitlines())
    )
    path = run_dir / CONFIG_NAME
    atomic_write_bytes(path, (header + yaml.safe_dump(values, sort_keys=False)).encode())
    return path


PASSWORD_NOTE = (
    "The database password is left out of storage (never written to a file): give it as\n"
    "PGPASSWORD=..., a ~/.pgpass line (host:port:db:user:password) or a service file."
)


def config_text_without_password(text: str, how: Callable[[str], str] = strip_password) -> str:
    """A config.yaml's text with its storage URL passed through ``how`` (strip_password,
    or redact_url for showing): runs written before issue 36 may hold a password."""
    import yaml

    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError:
        values = None
    storage = values.get("storage") if isinstance(values, dict) else None
    if not isinstance(values, dict) or not isinstance(storage, str) or how(storage) == storage:
        return redact_text(text)  # any other URL's password, masked
    values["storage"] = how(storage)
    header = "".join(f"{line}\n" for line in text.splitlines() if line.startswith("#"))
    if how is strip_password:
        header += "".join(f"# {line}\n" for line in PASSWORD_NOTE.splitlines())
    return redact_text(header + yaml.safe_dump(values, sort_keys=False))
