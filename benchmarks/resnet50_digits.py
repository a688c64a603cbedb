"""Prepares the ResNet-50 benchmark case: torchvision's ResNet-50, trained from random init
on scikit-learn's real handwritten digits rendered as a 64 px image folder.

No pretrained weights are available offline, so the teacher is trained here, once and
deterministically, on the same split the built-in digits task uses (a stratified 80/20
split of the 1,797 8x8 scans, ``random_state=0``). The images are written as an ordinary
image folder so the search reads them through its no-code loader, exactly as a user's own
data would be read:

    python benchmarks/resnet50_digits.py --out runs/resnet50-digits

writes

    OUT/digits-64px/{train,val}/<class>/<index>.png   grayscale PNGs, classes "0".."9"
    OUT/resnet50_digits.pt                            the trained state dict
    OUT/teacher.json                                  epochs, val top-1, seconds, params

and prints the ``autoshuikou search`` command for the case. Training uses the loader's
evaluation preprocessing (RGB, ``to_tensor``, ImageNet mean and std) plus random
translations of up to 4 px; no flips, digits are not flip-invariant. Rendering is skipped
when the folder is complete and training when the weights exist (``--retrain`` forces
it). The teacher's numbers, and the search's results on this case, go in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from torchvision.models import resnet50
from torchvision.transforms import functional as TF

SEED = 0
SIZE = 64
N_IMAGES = 1797
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BATCH = 64
LR = 0.03  # 0.1 diverged after epoch 4 (ResNet-50 from scratch, batch 64)
SHIFT = 4  # random translation, in pixels, during training only
DEFAULT_EPOCHS = 15  # ~33 s an epoch on 2 cores (1.3 s a batch, 23 batches, val pass): ~8.5 min


def render(folder: Path) -> None:
    """Writes the digits as ``folder/{train,val}/<class>/<index>.png`` at 64x64 px, unless
    the folder already holds all 1,797 images."""
    if folder.is_dir() and sum(1 for _ in folder.glob("*/*/*.png")) == N_IMAGES:
        print(f"{folder}: already rendered ({N_IMAGES} images)")
        return
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    n = len(digits.target)
    idx_train, idx_val = train_test_split(
        list(range(n)), test_size=0.2, random_state=SEED, stratify=digits.target
    )
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    for split, indices in (("train", idx_train), ("val", idx_val)):
        for i in indices:
            label = int(digits.target[i])
            path = folder / split / str(label) / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(pixels[i]).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            image.save(path)
    print(f"{folder}: rendered {len(idx_train)} train + {len(idx_val)} val images")


def load_split(split_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of one split, preprocessed as the no-code loader does at evaluation time
    (RGB, ``to_tensor``, ImageNet normalisation); classes are the sorted folder names."""
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    xs: list[torch.Tensor] = []
    ys: list[int] = []
    for label, name in enumerate(classes):
        for path in sorted((split_dir / name).glob("*.png"), key=lambda p: int(p.stem)):
            with Image.open(path) as image:
                tensor = TF.to_tensor(image.convert("RGB"))
            xs.append(TF.normalize(tensor, MEAN, STD))
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def translate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shifts each image by up to ``SHIFT`` px each way; the border is filled with the
    normalised value of a black pixel, the digits' background."""
    n, _, h, w = x.shape
    background = (-torch.tensor(MEAN) / torch.tensor(STD)).view(1, 3, 1, 1)
    padded = background.expand(n, 3, h + 2 * SHIFT, w + 2 * SHIFT).clone()
    padded[:, :, SHIFT : SHIFT + h, SHIFT : SHIFT + w] = x
    offsets = torch.randint(0, 2 * SHIFT + 1, (n, 2), generator=gen)
    return torch.stack(
        [padded[k, :, dy : dy + h, dx : dx + w] for k, (dy, dx) in enumerate(offsets.tolist())]
    )


@torch.no_grad()
def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(x), 256):
        logits = model(x[start : start + 256])
        correct += int((logits.argmax(1) == y[start : start + 256]).sum())
    return correct / len(x)


def train(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    epochs: int,
    val: tuple[torch.Tensor, torch.Tensor],
) -> tuple[nn.Module, float]:
    """Deterministic SGD (Nesterov momentum, weight decay) with a one-cycle schedule;
    returns the model in eval mode and the training seconds."""
    torch.manual_seed(SEED)
    model = resnet50(num_classes=10)
    steps_per_epoch = (len(train_x) + BATCH - 1) // BATCH
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, total_steps=epochs * steps_per_epoch
    )
    gen = torch.Generator().manual_seed(SEED)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        t_epoch = time.perf_counter()
        order = torch.randperm(len(train_x), generator=gen)
        total_loss = 0.0
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            loss = F.cross_entropy(model(translate(train_x[idx], gen)), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
        seconds = time.perf_counter() - t_epoch
        print(
            f"epoch {epoch + 1}/{epochs}: loss {total_loss / len(order):.4f}, "
            f"{seconds:.1f} s ({seconds / steps_per_epoch:.2f} s/batch), "
            f"val top-1 {top1(model, *val):.4f}",
            flush=True,
        )
    train_seconds = time.perf_counter() - t0
    return model.eval(), train_seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("runs/resnet50-digits"))
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--retrain", action="store_true", help="train even if weights exist")
    # Smoke tests only: train on the first N training images and save nothing.
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    out: Path = args.out
    folder = out / "digits-64px"
    weights = out / "resnet50_digits.pt"
    render(folder)
    val_x, val_y = load_split(folder / "val")

    if weights.exists() and not args.retrain and args.limit is None:
        model = resnet50(num_classes=10)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        print(f"{weights}: exists, not retrained (--retrain to train again)")
        print(f"val top-1: {top1(model, val_x, val_y):.4f}")
    else:
        train_x, train_y = load_split(folder / "train")
        if args.limit is not None:
            train_x, train_y = train_x[: args.limit], train_y[: args.limit]
        model, seconds = train(train_x, train_y, args.epochs, (val_x, val_y))
        acc = top1(model, val_x, val_y)
        print(f"val top-1: {acc:.4f} after {args.epochs} epochs, {seconds:.0f} s")
        if args.limit is not None:
            print(f"--limit {args.limit}: smoke test, nothing saved")
            return
        torch.save(model.state_dict(), weights)
        teacher = {
            "epochs": args.epochs,
            "val_top1": acc,
            "train_seconds": round(seconds, 1),
            "params": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        }
        (out / "teacher.json").write_text(json.dumps(teacher, indent=2) + "\n")
        print(f"wrote {weights} and {out / 'teacher.json'}")

    print(
        "search with:\n"
        f"  autoshuikou search --model torchvision:resnet50 --weights {weights} "
        f"--data imagefolder:{folder} --input-size {SIZE} --budget 30%"
    )


if __name__ == "__main__":
    main()
