"""``autoshuikou export``: one model of a run as a folder that deploys as it is."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from autoshuikou.errors import UserError
from autoshuikou.report.summary import load_summary
from autoshuikou.runtimes import DEFAULT_RUNTIME, Runtime, get_runtime
from autoshuikou.study.config import CONFIG_NAME, config_text_without_password
from autoshuikou.study.trial import STUDENT_NAME
from autoshuikou.util import read_json, sha256_file, write_json

MANIFEST = "export.json"


def choose_point(summary: dict[str, Any], trial: int | None) -> dict[str, Any]:
    """The Pareto point ``trial``, or (None) the best: highest metric, then fastest."""
    points = summary["pareto"]
    if not points:
        raise UserError(
            "this run has no feasible Pareto-optimal model to export",
            "rerun the search with a looser --budget or more --trials",
        )
    chosen: dict[str, Any] | None = None
    if trial is None:  # among the models whose files are here, where any are
        local = [p for p in points if p["path"] is not None] or points
        chosen = max(local, key=lambda p: (p["metric"], -p["latency_ms"]))
    for point in points:
        if point["trial"] == trial:
            chosen = point
    if chosen is not None:
        return chosen
    raise UserError(
        f"trial {trial} is not one of this run's Pareto-optimal models (only those keep files)",
        f"export one of trials {', '.join(str(p['trial']) for p in points)}, or --best",
    )


def _runtime(record: dict[str, Any]) -> Runtime:
    """The runtime a trial's metrics.json (or an export.json) names: it describes its file."""
    return get_runtime(str(record["runtime"].get("runtime", DEFAULT_RUNTIME)))


def inside_run(run_dir: Path, path: str) -> Path:
    """``path`` (from summary.json) resolved against the run folder, links followed; refused
    unless it stays inside it, so a tampered run cannot copy any readable file into an export."""
    root = Path(run_dir).resolve()
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root):
        raise UserError(
            f"the run names {path!r}, which lies outside its folder {root}",
            "export only runs you trust; rerun the search to rewrite its summary.json and files",
        )
    return resolved


def export_run(run_dir: Path, out: Path, trial: int | None = None) -> Path:
    """Write ``out``: the artifact, its plan and metrics, the PyTorch student, the run's
    config and a README saying how to run it. ``out`` must be new or empty."""
    run_dir = Path(run_dir)
    summary = load_summary(run_dir)
    point = choose_point(summary, trial)
    if point["path"] is None:
        raise UserError(
            f"trial {point['trial']} ran on another machine ({point.get('ran_on')}): its files "
            f"are in that machine's --out",
            "export it there, or give --trial of a model that ran here",
        )
    model = inside_run(run_dir, point["path"])
    folder = model.parent
    if not model.is_file():
        raise UserError(f"{model} is missing", "rerun the search: it rebuilds the front's models")
    if sha256_file(model) != point["model_sha256"]:
        raise UserError(
            f"{model} is damaged (its checksum differs from the run's)",
            "rerun the search to rebuild it, or export another trial",
        )
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty folder", "give a new folder")
    metrics = read_json(folder / "metrics.json")
    inputs, outputs = _runtime(metrics).tensors(model)
    data = read_json(run_dir / "data.json") if (run_dir / "data.json").exists() else {}
    manifest = {
        "study": run_dir.name,
        "trial": point["trial"],
        "artifact": model.name,
        "runtime": metrics["runtime"],
        "inputs": inputs,
        "outputs": outputs,
        "metric_name": metrics["metric_name"],
        "metric": metrics["metric"],
        "metric_retained": metrics["metric_retained"],
        "latency_ms": point["latency_ms"],
        "latency_ratio": point.get("latency_ratio", metrics["latency_ratio"]),
        "size_bytes": metrics["size_bytes"],
        "model_sha256": point["model_sha256"],
        "student": STUDENT_NAME if (folder / STUDENT_NAME).exists() else None,
        "classes": data.get("data", {}).get("classes"),
        "preprocessing": data.get("data", {}).get("preprocessing"),
        "normalize": data.get("data", {}).get("normalize"),
        "hardware": metrics.get("hardware"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for name in (model.name, "plan.json", "metrics.json", STUDENT_NAME):
            if (folder / name).exists():
                shutil.copyfile(inside_run(run_dir, str(folder / name)), work / name)
        if (run_dir / CONFIG_NAME).exists():  # never a database password, even an old run's
            config = inside_run(run_dir, CONFIG_NAME)
            (work / CONFIG_NAME).write_text(config_text_without_password(config.read_text()))
        if (run_dir / "data.json").exists():
            shutil.copyfile(inside_run(run_dir, "data.json"), work / "data.json")
        write_json(work / MANIFEST, manifest)
        (work / "README.md").write_text(readme(manifest))
        if out.exists():
            out.rmdir()
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def readme(m: dict[str, Any]) -> str:
    """How to run the exported model, in a few lines a user can paste."""
    ins = "\n".join(f"- `{i['name']}`: {i['dtype']} {i['shape']}" for i in m["inputs"]) or "-"
    outs = "\n".join(f"- `{o['name']}`: {o['dtype']} {o['shape']}" for o in m["outputs"]) or "-"
    feed = ", ".join(f'"{i["name"]}": {i["name"]}' for i in m["inputs"]) or '"input": batch'
    threads = m["runtime"].get("threads", 1)
    run = f"```python\n{_runtime(m).run_snippet(m['artifact'], threads, feed)}\n```"
    retained = (
        f" ({m['metric_retained']:.1%} of the uncompressed model's)"
        if m.get("metric_retained") is not None
        else ""
    )
    pre = m.get("preprocessing") or "as the task's own data loader prepares inputs"
    norm = m.get("normalize")
    if norm:
        pre += f"; mean {norm['mean']}, std {norm['std']} ({norm['name']})"
    classes = (
        f"\nClasses, in output order: {', '.join(map(str, m['classes']))}.\n"
        if m.get("classes")
        else ""
    )
    return f"""# {m["study"]}, trial {m["trial"]}

Exported by `autoshuikou export`. {m["metric_name"]} {m["metric"]:.4f}{retained};
{m["latency_ms"]:.3f} ms at batch 1 ({m["latency_ratio"]:.0%} of the uncompressed latency) in
{m["runtime"].get("runtime")} with {threads} thread(s) on the machine the search ran on;
{m["size_bytes"] / 1e6:.2f} MB.

## Run it

{run}

Or with autoshuikou installed (torch tensors or numpy arrays in, tensors out):

```python
import autoshuikou

model = autoshuikou.load("path/to/this/folder")
logits = model(batch)
```

Load only folders you trust: like `torch.load` of a pickle, `autoshuikou.load()` runs the
task code that this folder's `config.yaml` names, and a TorchScript model is itself a
program that `torch.jit.load` runs.

Inputs:
{ins}

Outputs:
{outs}

Preprocessing: {pre}.
{classes}
## Files

- `{m["artifact"]}`: the deployable model (sha256 {m["model_sha256"][:16]}...)
- `plan.json`: what was pruned, which layers are int8, how it was distilled
- `metrics.json`: everything measured on it
- `{m["student"] or "student.pt"}`: the pruned, fine-tuned PyTorch student (fp32) to keep training:
  `autoshuikou.load("path/to/this/folder", student=True).module`
- `config.yaml`: the search's settings (`autoshuikou search --config config.yaml` reruns it)
- `export.json`: the facts above, machine-readable
"""
