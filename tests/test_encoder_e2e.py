"""A user's own encoder end to end: a local Hugging Face folder (config.json + weights) and a
file.py:function Task around it, searched, verified, and the docs' encoder example (docs/own-model.md) run."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoshuikou import search
from autoshuikou.measure.accuracy import artifact_scores
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.report.verify import verify_run
from autoshuikou.tasks import load_task
from autoshuikou.util import read_json

pytestmark = pytest.mark.slow
pytest.importorskip("transformers")


def _encoder_example() -> str:
    from doc_blocks import block  # docs/own-model.md, "Your own encoder"

    return block("my_encoder.py")


def test_own_hugging_face_encoder_folder_is_searched_and_verified(tmp_path: Path) -> None:
    from encoder_task import tiny_bert
    from transformers import BertTokenizerFast

    folder = tmp_path / "my-bert"
    tiny_bert().save_pretrained(folder)  # config.json + model.safetensors, as users have
    words = ["the", "match", "ended", "to", "nil", "shares", "fell", "percent"]
    digits = [str(d) for d in range(10)] + [f"##{d}" for d in range(10)]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *digits]))
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    assert (folder / "config.json").exists()
    task_file = tmp_path / "my_encoder.py"
    task_file.write_text(_encoder_example().replace("path/to/my-bert", str(folder)))
    task = load_task(f"{task_file}:make_task")
    assert task.family == "encoder"
    result = search(
        task,
        refine=0,
        budget="300%",
        trials=3,
        out=tmp_path / "runs",
        measure_seconds=0.2,
        predict=False,
    )
    assert result.feasible
    # No BatchNorm: the default fidelity scores plans at the rung, not by the predictor.
    assert result.summary["fidelity"] == "screen"
    tuned = read_json(result.run_dir / "trials" / "0002" / "metrics.json")
    assert "screen_metric" in tuned and "predict_signal" not in tuned and tuned["distill_losses"]
    for point in result.pareto:
        model = result.run_dir / point["path"]
        metrics = read_json(model.parent / "metrics.json")
        metric, scores = artifact_scores(model, task, RuntimeSettings())
        assert metric == metrics["metric"]
        assert scores == metrics["scores"] and 0 < scores["embedding_cosine"] <= 1.0 + 1e-6
    rows = verify_run(result.run_dir, task=task, seconds=0.05)
    assert rows and all(row["metric"] and row["counts"] for row in rows)
