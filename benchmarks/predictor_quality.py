"""How well the learned accuracy predictor did, read from a comparison's studies.

    python benchmarks/predictor_quality.py runs/compare-predictor-digits runs/compare-predictor-resnet18
    python benchmarks/predictor_quality.py runs/resnet50-digits-64px-30pct     # one search

For each folder written by `autoshuikou compare` (studies named <strategy>-seed<N>), over
the studies of --strategy (default: tpe-warm and predictor, whichever exist), or for the
run folder of one `autoshuikou search` (it holds study.journal): how well the
signal (the untrained student's score after BatchNorm recalibration) ranks the trained
models (Spearman), and, for the plans the predictor judged and then trained, how far its
prediction was from the trained metric and how often within one of its standard errors.
Prints one JSON line per folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import optuna
from scipy.stats import spearmanr

from autoshuikou.study.predictor import ERROR_ATTR, PREDICTED_ATTR, SIGNAL_ATTR
from autoshuikou.study.refine import REFINE_ATTR
from autoshuikou.study.storage import journal_storage


def quality(folder: Path, strategies: list[str]) -> dict[str, object]:
    signals, trained, misses, within = [], [], [], 0
    if (folder / "study.journal").exists():
        studies = [folder]
    else:
        studies = [d for s in strategies for d in sorted(folder.glob(f"{s}-seed*")) if d.is_dir()]
    for study_dir in studies:
        study = optuna.load_study(study_name=None, storage=journal_storage(study_dir))
        for trial in study.trials:
            attrs = trial.user_attrs
            if "metric" not in attrs or REFINE_ATTR in attrs:
                continue
            if SIGNAL_ATTR in attrs:
                signals.append(attrs[SIGNAL_ATTR])
                trained.append(attrs["metric"])
            if PREDICTED_ATTR in attrs:
                miss = attrs["metric"] - attrs[PREDICTED_ATTR]
                misses.append(miss)
                within += abs(miss) <= attrs[ERROR_ATTR]
    errors = np.array(misses)
    return {
        "folder": str(folder),
        "studies": [d.name for d in studies],
        "trained_with_signal": len(signals),
        "spearman_signal_vs_trained": round(float(spearmanr(signals, trained)[0]), 3),
        "predicted_then_trained": len(misses),
        "mean_abs_error": round(float(np.abs(errors).mean()), 4),
        "median_abs_error": round(float(np.median(np.abs(errors))), 4),
        "bias": round(float(errors.mean()), 4),
        "within_one_standard_error": round(within / len(misses), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--strategy", action="append", help="default: tpe-warm and predictor")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for folder in args.folders:
        print(json.dumps(quality(folder, args.strategy or ["tpe-warm", "predictor"])))


if __name__ == "__main__":
    main()
