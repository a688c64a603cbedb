"""Tiny models and tasks so each stage is tested in seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autoshuikou.tasks import Task


class TinyResNet(nn.Module):
    """A stem, one residual block and a classifier: enough to exercise coupled channels."""

    def __init__(self, width: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.conv1 = nn.Conv2d(width, width * 2, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * 2)
        self.conv2 = nn.Conv2d(width * 2, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def tiny_data(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable synthetic images: the class decides which quadrant is bright."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=gen)
    images = torch.randn(n, 1, 8, 8, generator=gen) * 0.3
    for i, label in enumerate(labels.tolist()):
        r, c = divmod(label, 2)
        images[i, 0, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] += 1.0
    return images, labels


def make_tiny_task(train_epochs: int = 3, width: int = 16) -> Task:
    torch.manual_seed(0)
    x, y = tiny_data(320)
    model = TinyResNet(width)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(train_epochs):
        for i in range(0, 256, 32):
            loss = F.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return Task(
        model=model.eval(),
        train_data=DataLoader(TensorDataset(x[:256], y[:256]), batch_size=32),
        val_data=DataLoader(TensorDataset(x[256:], y[256:]), batch_size=64),
        example_input=x[:1].clone(),
        name="tiny",
    )


@pytest.fixture
def tiny_task() -> Task:
    return make_tiny_task()


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Teachers and locks go to a per-session folder, never the user's cache."""
    cache = tmp_path_factory.mktemp("cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("AUTOSHUIKOU_CACHE", str(cache))
    patch.setenv("AUTOSHUIKOU_LATENCY_LOCK", str(cache / "latency.lock"))
    yield cache
    patch.undo()


TINY_TASK_FILE = """
import sys
sys.path.insert(0, {tests!r})
from conftest import make_tiny_task

def make_task():
    return make_tiny_task()
"""


@pytest.fixture
def tiny_task_file(tmp_path: Path) -> str:
    """A user's task file, as `--task file.py:function` takes it."""
    path = tmp_path / "tiny_task.py"
    path.write_text(TINY_TASK_FILE.format(tests=str(Path(__file__).parent)))
    return f"{path}:make_task"


# The test server's role and password (tests/test_secrets.py looks for it in every output).
POSTGRES_USER = "tester"
POSTGRES_PASSWORD = "S3cret-pw-a7Qz"


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL server, from the machine's PostgreSQL binaries, reachable only
    by its Unix socket and only with a password (scram-sha-256): the URL it yields carries
    ``POSTGRES_PASSWORD``, which the server checks, so tests see where a password could leak.

    Debian's postgresql package provides them (it is part of this project's machine image).
    The server runs as the `postgres` user when the tests run as root (initdb refuses root).
    """
    import os
    import shutil
    import socket
    import subprocess

    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql)")
    import tempfile

    # Not under pytest's private (0700) temp folder: the server user must reach it. A short
    # path: a socket's path must stay under 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="autoshuikou-pg-"))
    data = folder / "data"
    password_file = folder / "password"
    password_file.write_text(POSTGRES_PASSWORD + "\n")
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
        shutil.chown(password_file, "postgres")
    with socket.socket() as s:  # a free number: the socket file is named by it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True)  # noqa: E731
    run(
        str(bin_dir / "initdb"),
        "-D",
        str(data),
        "-U",
        POSTGRES_USER,
        f"--pwfile={password_file}",
        "--auth=scram-sha-256",
    )
    password_file.unlink()
    # No TCP at all (listen_addresses empty): the socket in our folder is the only way in.
    options = f"-p {port} -k {folder} -c listen_addresses='' -c max_connections=100"
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-w",
        "-l",
        str(folder / "log"),
        "start",
    )
    try:
        yield (
            f"postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}@/postgres?host={folder}&port={port}"
        )
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
