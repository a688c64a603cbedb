"""The no-code path: models by name, data by path, every input checked up front, run configs,
export and load. End to end through the CLI, as a user runs it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import autoshuikou
from autoshuikou.cli import main
from autoshuikou.deploy import CompressedModel
from autoshuikou.errors import UserError
from autoshuikou.families import Encoder
from autoshuikou.study.config import SearchConfig, read_config_file
from autoshuikou.tasks import Task, task_for, validate_task
from autoshuikou.tasks.nocode import nocode_task
from autoshuikou.util import read_json


def image_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 24) -> Path:
    """Grayscale PNGs; the class decides which quadrant is bright (learnable, like a scan)."""
    gen = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (torch.rand(size, size, generator=gen) * 60).to(torch.uint8)
            r, q = divmod(c % 4, 2)
            half = size // 2
            pixels[r * half : (r + 1) * half, q * half : (q + 1) * half] += 180
            Image.fromarray(pixels.numpy(), mode="L").save(root / f"c{c}" / f"{i}.png")
    return root


def resnet18_weights(path: Path, classes: int = 3) -> Path:
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=classes).state_dict(), path)
    return path


def _score(model: CompressedModel, task: Task) -> float:
    outputs, targets = [], []
    for inputs, target in task.val_data:
        out = model(inputs)
        outputs.append(out[0] if isinstance(out, tuple) else out)
        targets.append(target)
    return task.score(torch.cat(outputs), torch.cat(targets))


@pytest.mark.slow
def test_torchvision_model_on_an_image_folder_searched_exported_and_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = image_folder(tmp_path / "images")
    weights = resnet18_weights(tmp_path / "resnet18.pt")
    out = tmp_path / "runs"
    argv = [
        "search",
        "--model",
        "torchvision:resnet18",
        "--weights",
        str(weights),
        "--data",
        f"imagefolder:{images}",
        "--input-size",
        "32",
        "--budget",
        "300%",
        "--trials",
        "3",
        "--refine",
        "0",
        "--measure-seconds",
        "0.2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    run = out / "resnet18-images-300pct"
    data = read_json(run / "data.json")
    assert data["classes"] == 3 and data["data"]["classes"] == ["c0", "c1", "c2"]
    assert data["data"]["split"].startswith("stratified") and len(data["data"]["val_files"]) == 7
    assert data["data"]["mode"] == "RGB"  # grayscale scans fed to a 3-channel model

    # The written config reruns the same study: it resumes, and trains nothing new.
    config = run / "config.yaml"
    settings = read_config_file(config)
    assert SearchConfig(**settings).model == "torchvision:resnet18"
    assert settings["study_name"] == run.name and Path(settings["weights"]).is_absolute()
    journal = (run / "study.journal").read_bytes()
    assert main(["search", "--config", str(config)]) == 0
    summary = read_json(run / "summary.json")
    assert summary["trials_complete"] == 3
    assert (run / "study.journal").read_bytes().count(b'"op_code": 0') == journal.count(
        b'"op_code": 0'
    )  # no new trial was created
    capsys.readouterr()
    assert main(["show", str(run)]) == 0
    assert "model: torchvision:resnet18" in capsys.readouterr().out

    # Export the best model and load it back: it reproduces the recorded metric exactly.
    exported = tmp_path / "best"
    assert main(["export", str(run), "--best", "--out", str(exported)]) == 0
    manifest = read_json(exported / "export.json")
    best = max(summary["pareto"], key=lambda p: (p["metric"], -p["latency_ms"]))
    assert manifest["trial"] == best["trial"]
    assert manifest["inputs"][0]["name"] == "input" and manifest["inputs"][0]["shape"][1:] == [
        3,
        32,
        32,
    ]
    readme = (exported / "README.md").read_text()
    assert "InferenceSession" in readme and "0.485" in readme and "c0, c1, c2" in readme
    task = task_for(SearchConfig(**read_config_file(exported / "config.yaml")))
    model = autoshuikou.load(exported)
    assert _score(model, task) == manifest["metric"] == model.metric
    batch = next(iter(task.val_data))[0]
    assert torch.equal(model(batch), model(batch.numpy()))

    # The PyTorch student of a pruned model: rebuilt from the plan, smaller, trainable.
    pruned = None
    for point in summary["pareto"]:
        folder = (run / point["path"]).parent
        if not read_json(folder / "plan.json")["prune"]:
            continue
        pruned = point
        student = autoshuikou.load(folder, student=True)
        assert isinstance(student.module, nn.Module)
        params = sum(p.numel() for p in student.module.parameters())
        assert params == read_json(folder / "metrics.json")["torch_params"]
        assert params < sum(p.numel() for p in task.model.parameters())
        artifact = autoshuikou.load(folder)
        if not any(v == "int8" for v in read_json(folder / "plan.json")["precision"].values()):
            assert torch.allclose(student(batch), artifact(batch), atol=1e-4)
    assert pruned is not None, "a uniform pruned plan is among the first trials"


def test_config_file_settings_are_read_checked_and_overridden_by_flags(tmp_path: Path) -> None:
    from autoshuikou.cli import _file_defaults, _parser, search_config

    config = tmp_path / "run.yaml"
    config.write_text("budget: 60%\ntrials: 7\nwarm-start: false\nmeasure_seconds: 0.5\n")
    args = _parser(_file_defaults(str(config))).parse_args(
        ["search", "--config", str(config), "--trials", "9"]
    )
    settings = search_config(args)
    assert (settings.budget, settings.trials, settings.warm_start) == ("60%", 9, False)
    assert settings.measure_seconds == 0.5
    config.write_text("budgte: 60%\n")
    with pytest.raises(UserError, match="did you mean 'budget'"):
        read_config_file(config)
    config.write_text("trials: many\n")
    with pytest.raises(UserError, match="trials is 'many', not a int"):
        read_config_file(config)
    assert main(["search", "--config", str(tmp_path / "missing.yaml")]) == 2


# --- every new way in is checked before work starts, with one message --------------------


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").write_text("")
    _fails(["search", "--out", str(tmp_path / "out")], capsys, "is a file, not a folder")


def test_model_names_and_weights_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = image_folder(tmp_path / "images", classes=2, per_class=4)
    data = ["--data", f"imagefolder:{images}"]
    _fails(["search", "--model", "torchvision:resnet18", *data], capsys, "needs --weights")
    _fails(
        ["search", "--model", "torchvision:nosuchnet", "--random-weights", *data],
        capsys,
        "has no classification model",
    )
    _fails(["search", "--model", "resnet18", *data], capsys, "is not a model name")
    wrong = tmp_path / "vgg.pt"
    torch.save(
        {"features.0.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(2, 8)}, wrong
    )
    _fails(
        ["search", "--model", "torchvision:resnet18", "--weights", str(wrong), *data],
        capsys,
        "do not fit torchvision:resnet18",
    )
    three = resnet18_weights(tmp_path / "r18.pt", classes=3)
    _fails(
        ["search", "--model", "torchvision:resnet18", "--weights", str(three), *data],
        capsys,
        "3 outputs but --data",
        "2 classes",
    )
    _fails(["search", "--data", f"imagefolder:{images}"], capsys, "go with --model")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    _fails(
        ["search", "--model", "torchvision:resnet18", "--weights", str(garbage), *data],
        capsys,
        "cannot be read as PyTorch weights",
    )


class OwnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)


def test_whole_module_files_load_only_when_safe(tmp_path: Path) -> None:
    from autoshuikou.tasks.models import load_model

    safe = tmp_path / "whole.pt"
    torch.save(torchvision.models.resnet18(num_classes=2), safe)
    loaded = load_model(str(safe), None, False, 2)
    assert isinstance(loaded.model, torchvision.models.ResNet) and loaded.classes == 2
    own = tmp_path / "own.pt"
    torch.save(OwnNet(), own)
    with pytest.raises(UserError, match="names code outside"):
        load_model(str(own), None, False, 2)
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(nn.Linear(3, 2)).save(str(scripted))
    with pytest.raises(UserError, match="TorchScript"):
        load_model(str(scripted), None, False, 2)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(UserError, match=r"cannot be read as a file written by torch\.save"):
        load_model(str(junk), None, False, 2)


def test_image_folders_are_checked(tmp_path: Path) -> None:
    weights = resnet18_weights(tmp_path / "r18.pt", classes=2)
    images = image_folder(tmp_path / "images", classes=2, per_class=4)
    (images / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        nocode_task("torchvision:resnet18", f"imagefolder:{images}", weights, input_size=16)
    (images / "empty").rmdir()
    (images / "c1" / "broken.png").write_text("not an image")
    with pytest.raises(UserError, match=r"broken\.png is not an image"):
        nocode_task("torchvision:resnet18", f"imagefolder:{images}", weights, input_size=16)
    (images / "c1" / "broken.png").unlink()
    with pytest.raises(UserError, match="not a folder"):
        nocode_task("torchvision:resnet18", f"imagefolder:{tmp_path / 'nope'}", weights)
    with pytest.raises(UserError, match="--input-size"):
        nocode_task("torchvision:resnet18", f"imagefolder:{images}", weights, input_size="big")
    # train/ and val/ given: used as they are, classes must agree.
    split = tmp_path / "split"
    image_folder(split / "train", classes=2, per_class=4)
    image_folder(split / "val", classes=2, per_class=2)
    task = nocode_task("torchvision:resnet18", f"imagefolder:{split}", weights, input_size=16)
    assert task.provenance["data"]["val_samples"] == 4
    assert task.example_input.shape == (1, 3, 16, 16)
    (split / "val" / "c2").mkdir()
    with pytest.raises(UserError, match="train/ has classes"):
        nocode_task("torchvision:resnet18", f"imagefolder:{split}", weights)


def test_rgb_images_for_a_grayscale_model_are_refused(tmp_path: Path) -> None:
    from autoshuikou.tasks.data import DataOptions, ImageFolderData
    from autoshuikou.tasks.models import NamedModel

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / c / f"{i}.png")
    gray = NamedModel(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()), "classification", 2, "g")
    with pytest.raises(UserError, match="RGB image but the model's first layer takes 1 channel"):
        ImageFolderData().load(str(tmp_path), gray, DataOptions())


def test_a_task_whose_example_does_not_fit_its_model_is_one_message() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 2, (8,))
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    task = Task(model, DataLoader(TensorDataset(x, y)), DataLoader(TensorDataset(x, y)), x[:1])
    with pytest.raises(UserError, match=r"the model fails on Task\.example_input"):
        validate_task(task, "task function t")
    good = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    labels = torch.full((8,), 5)
    bad_labels = Task(
        good, DataLoader(TensorDataset(x, labels)), DataLoader(TensorDataset(x, y)), x[:1]
    )
    with pytest.raises(UserError, match=r"class labels 5\.\.5 but the model has 2 outputs"):
        validate_task(bad_labels, "task function t")


def test_text_tables_are_checked(tmp_path: Path) -> None:
    from autoshuikou.tasks.data import TextTable

    table = tmp_path / "texts.csv"
    table.write_text("sentence,category\nhello,a\n")
    with pytest.raises(UserError, match="not text and label"):
        TextTable().class_names(str(table))
    table.write_text("text,label\nhello,a\nworld,b\nagain,a\n")
    assert TextTable().class_names(str(table)) == ["a", "b"]
    tsv = tmp_path / "texts.tsv"
    tsv.write_text("Text\tLabel\nhello\t2\nworld\t10\n")
    assert TextTable().class_names(str(tsv)) == ["2", "10"]  # numeric labels sort as numbers


@pytest.mark.slow
def test_hugging_face_folder_on_a_csv_searched_exported_and_loaded(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from encoder_task import tiny_bert
    from transformers import BertTokenizerFast

    folder = tmp_path / "my-bert"
    tiny_bert().save_pretrained(folder)  # a bare encoder: the head is trained on the CSV
    words = ["the", "match", "ended", "to", "nil", "shares", "fell", "percent", "goal", "bank"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    table = tmp_path / "news.csv"
    rng = np.random.default_rng(0)
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(60):
            sport = i % 2 == 0
            pool = (
                ["match", "ended", "nil", "goal"]
                if sport
                else ["shares", "fell", "percent", "bank"]
            )
            writer.writerow([" ".join(rng.choice(pool, 6)), "sport" if sport else "business"])
    out = tmp_path / "runs"
    argv = ["search", "--model", f"hf:{folder}", "--data", str(table), "--max-length", "12"]
    argv += ["--budget", "300%", "--trials", "2", "--refine", "0", "--measure-seconds", "0.2"]
    argv += ["--out", str(out)]
    assert main(argv) == 0
    run = out / "my-bert-news-300pct"
    assert read_json(run / "data.json")["data"]["classes"] == ["business", "sport"]
    exported = tmp_path / "exported"
    assert main(["export", str(run), "--out", str(exported)]) == 0
    task = task_for(SearchConfig(**read_config_file(exported / "config.yaml")))
    assert task.family == "encoder"
    model = autoshuikou.load(exported)
    assert _score(model, task) == read_json(exported / "export.json")["metric"]
    assert [i["name"] for i in read_json(exported / "export.json")["inputs"]] == [
        "input_ids",
        "attention_mask",
    ]


def test_timm_models_by_name_take_their_classes_from_the_weights(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    from autoshuikou.tasks.models import load_model

    weights = tmp_path / "r10t.pt"
    torch.save({"state_dict": timm.create_model("resnet10t", num_classes=3).state_dict()}, weights)
    loaded = load_model("timm:resnet10t", weights, False, 3)
    assert loaded.classes == 3 and loaded.model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def _tokenizer(folder: Path, words: list[str]) -> None:
    from transformers import BertTokenizerFast

    vocab = folder.parent / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)


def test_hugging_face_sequence_classifier_folder_is_used_as_it_is(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertForSequenceClassification

    from autoshuikou.compress.prune import channel_groups, prune
    from autoshuikou.families import SequenceClassifier
    from autoshuikou.tasks.models import load_model

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=3,
    )
    folder = tmp_path / "clf"
    BertForSequenceClassification(config).save_pretrained(folder)
    _tokenizer(folder, ["good", "bad"])
    loaded = load_model(f"hf:{folder}", None, False, 3)
    assert isinstance(loaded.model, SequenceClassifier) and loaded.classes == 3
    assert loaded.family == "encoder" and not loaded.needs_head
    ids, mask = torch.ones(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long)
    logits, embedding = loaded.model(ids, mask)
    assert logits.shape == (1, 3) and embedding.shape == (1, 32)
    inputs = {"input_ids": ids, "attention_mask": mask}
    groups = channel_groups(loaded.model, inputs, Encoder())
    heads = [g for g in groups if g.unit == "heads"]
    assert len(heads) == 2  # one per layer, found by the dependency graph
    student = prune(loaded.model, inputs, {heads[0].name: 0.5}, 1, Encoder())
    assert student(ids, mask)[0].shape == (1, 3)
    assert sum(p.numel() for p in student.parameters()) < sum(
        p.numel() for p in loaded.model.parameters()
    )
