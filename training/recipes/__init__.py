"""Experiment recipes: versioned YAML files holding a ``TrainConfig`` (read by the CLI and bench-quality).

A recipe names itself (``name`` + ``version``) so every bundle's ``metrics.json`` and every
``promotion.json`` can say which recipe produced a model. ``--recipe`` takes a file path or the
name of a file in this folder (``frappe`` -> ``training/recipes/frappe.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.config import TrainConfig

RECIPE_DIR = Path(__file__).resolve().parent
DEFAULT_RECIPES = {"frappe": "frappe"}  # input format -> recipe used when none is given


class Recipe(BaseModel):
    """One experiment: what to train (``train``) and how the data is split."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int = Field(ge=1)
    description: str = ""
    format: str | None = None
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = 2024
    train: TrainConfig = Field(default_factory=TrainConfig)
    source: str | None = None  # file it was read from (filled in by load_recipe)

    def ref(self) -> dict[str, Any]:
        """How bundles and promotion records name this recipe."""
        return {"name": self.name, "version": self.version, "source": self.source}


def recipe_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml", ".json") or p.exists():
        return p
    return RECIPE_DIR / f"{name_or_path}.yaml"


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Read and validate a recipe; errors name the file and the bad field."""
    path = recipe_path(name_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"recipe {name_or_path!r} not found ({path}); built-in recipes: {known}")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"recipe {path}: expected a mapping at the top level")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise ValueError(f"recipe {path}: {e}") from e
    return recipe.model_copy(update={"source": str(path)})


def default_recipe(fmt: str | None) -> Recipe | None:
    """The recipe a format trains with when nothing else is said (None: plain TrainConfig defaults)."""
    name = DEFAULT_RECIPES.get(fmt or "")
    return load_recipe(name) if name else None


def adhoc_recipe(cfg: TrainConfig, fmt: str | None) -> Recipe:
    """A recipe for settings given on the command line (not a file): named ``<fmt>-adhoc``."""
    return Recipe(name=f"{fmt or 'data'}-adhoc", version=1, format=fmt, train=cfg)
