"""A tiny BERT classifier built from a config (no weights needed), as a user would bring one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from autoshuikou import Task
from autoshuikou.families import EncoderClassifier
from autoshuikou.tasks.bbc_minilm import TokenizedDocs

TOKENS = 16
VOCAB = 64


def tiny_bert(heads: int = 4, hidden: int = 32, layers: int = 2) -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=TOKENS,
    )
    return BertModel(config, add_pooling_layer=False).eval()


def token_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Learnable token sequences: the class is which marker token (1, 2 or 3) appears most."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    ids = torch.randint(4, VOCAB, (n, TOKENS), generator=gen)
    for i, label in enumerate(labels.tolist()):
        ids[i, torch.randperm(TOKENS, generator=gen)[:5]] = label + 1
    lengths = torch.randint(TOKENS // 2, TOKENS + 1, (n,), generator=gen)
    mask = (torch.arange(TOKENS)[None, :] < lengths[:, None]).long()
    ids[:, 0] = 1 + labels  # always visible, even in short sequences
    return ids * mask, mask, labels


def make_encoder_task(epochs: int = 6) -> Task:
    ids, mask, labels = token_data(288)
    model = EncoderClassifier(tiny_bert(), classes=3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for i in range(0, 224, 32):
            logits, _ = model(ids[i : i + 32], mask[i : i + 32])
            loss = F.cross_entropy(logits, labels[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return Task(
        model=model.eval(),
        train_data=DataLoader(TokenizedDocs(ids[:224], mask[:224], labels[:224]), batch_size=32),
        val_data=DataLoader(TokenizedDocs(ids[224:], mask[224:], labels[224:]), batch_size=64),
        example_input=(ids[224:225].clone(), mask[224:225].clone()),
        name="tiny-bert",
        family="encoder",
    )
