"""Taking the result away: ``export`` a chosen model of a run into a self-contained folder,
``load`` it back (the deployed artifact in its runtime, or the PyTorch student)."""

from __future__ import annotations

from autoshuikou.deploy.load import CompressedModel, load, load_student
from autoshuikou.deploy.package import export_run

__all__ = ["CompressedModel", "export_run", "load", "load_student"]
