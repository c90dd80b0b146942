"""Training settings (pydantic): how one network is fitted, and the recipe's structure around it.

A run is fully described by one ``TrainConfig``: the network and optimiser settings, plus the
structure of what gets exported (``ensemble`` members, ``distill`` into one student,
``calibrate``, ``export`` precision). ``metrics.json`` stores it under ``config`` and ``retrain``
rebuilds the same structure from there. Experiment recipes are versioned YAML files
(``training/recipes/*.yaml``, see ``training.recipes``) that hold a ``TrainConfig``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model import NetworkConfig, network_config


class DistillConfig(BaseModel):
    """Knowledge distillation: the ``ensemble`` members are the teacher, one student is exported.

    Student loss: ``alpha * BCE(s, y) + (1 - alpha) * T^2 * BCE(s / T, sigmoid(t / T))``. With
    ``cross_fit`` member k never sees fold k of the train rows, so the teacher logits on every
    train row are out-of-fold (in-sample teacher probabilities mostly repeat the labels).
    ``student`` overrides the fit settings for the student (e.g. a wider ``model_overrides``).
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    alpha: float = Field(0.5, ge=0.0, le=1.0)
    temperature: float = Field(1.0, gt=0.0)
    cross_fit: bool = True
    student: dict[str, Any] = Field(default_factory=dict)


class ExportConfig(BaseModel):
    """Precision of the served ``model.onnx``; int8/fp16 are kept only if valid AUC drops <= max_auc_drop."""

    model_config = ConfigDict(extra="forbid")

    precision: Literal["fp32", "int8", "fp16"] = "fp32"
    max_auc_drop: float = Field(0.0005, ge=0.0)


class TrainConfig(BaseModel):
    """Everything that decides a training run besides the data.

    ``model_overrides`` are applied to the preset (e.g. ``{"use_rli": False}``); ``dropout`` is a
    shortcut for the model's dropout. Derive variants with ``cfg.replace(seed=...)``.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)

    model: str = "dlf"
    preset: str = "small"
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    dropout: float | None = None
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(1024, ge=1)
    epochs: int = Field(20, ge=1)
    patience: int = Field(2, ge=0)
    embedding_l2: float = Field(0.0, ge=0)  # (l2 / 2) * ||E||^2 over embedding tables, added each step
    weight_decay: float = Field(0.0, ge=0)  # Adam weight decay on every non-embedding parameter
    monitor: Literal["auc", "logloss"] = "auc"  # early stopping / best checkpoint criterion on valid
    eval_every: float = Field(1.0, gt=0, le=1)  # validate every this many epochs (0.5 = twice per epoch)
    plateau_factor: float = Field(1.0, gt=0, le=1)  # lr *= factor after an evaluation without improvement
    plateau_restore: bool = False  # also go back to the best weights before continuing
    seed: int = 2024
    eval_batch_size: int = Field(8192, ge=1)
    grad_clip: float | None = None
    amp: bool | None = None  # None = automatic (on with CUDA)
    ema_decay: float | None = Field(None, gt=0, lt=1)  # evaluate/keep an EMA of the weights
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: torch's default)
    # structure of the exported model
    ensemble: int = Field(1, ge=1)  # members (seeds seed, seed+1, ...); logits averaged unless distilled
    calibrate: bool = False  # fit one temperature on the valid logits after training (AUC unchanged)
    distill: DistillConfig | None = None  # train one student on the members' logits; export the student
    export: ExportConfig = Field(default_factory=ExportConfig)

    @model_validator(mode="after")
    def _distill_needs_teacher(self) -> TrainConfig:
        if self.distill is not None and self.ensemble < 1:
            raise ValueError("distill needs ensemble >= 1 teacher members")
        if self.distill is not None and self.distill.cross_fit and self.ensemble < 2:
            raise ValueError("distill.cross_fit needs ensemble >= 2 (one fold per member)")
        return self

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` applied."""
        return TrainConfig.model_validate({**self.model_dump(), **changes})

    def network_config(self) -> NetworkConfig:
        """The model's own pydantic config: its preset fields + overrides (+ dropout), validated."""
        overrides = dict(self.model_overrides)
        if self.dropout is not None:
            overrides["dropout"] = self.dropout
        return network_config(self.model, self.preset, overrides)

    def student_config(self) -> TrainConfig:
        """The single network a distilled recipe exports: fit settings + ``distill.student`` overrides."""
        if self.distill is None:
            raise ValueError("student_config() needs a distill section")
        changes = dict(self.distill.student)
        if "model_overrides" in changes:
            changes["model_overrides"] = {**self.model_overrides, **changes["model_overrides"]}
        return self.replace(ensemble=1, distill=None, calibrate=False, **changes)

    def structure(self) -> dict[str, Any]:
        """What the exported graph is made of: compared by retrain tests and recorded per bundle."""
        return {
            "members": self.ensemble if self.distill is None else 1,
            "teacher_members": self.ensemble if self.distill is not None else None,
            "distilled": self.distill is not None,
            "calibrated": self.calibrate,
            "precision": self.export.precision,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings plus the resolved network config (``model_config``, read-only)."""
        d = self.model_dump(mode="json")
        d["model_config"] = self.network_config().to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict`` (the derived ``model_config`` key is ignored)."""
        return cls.model_validate({k: v for k, v in data.items() if k != "model_config"})


def apply_overrides(base: TrainConfig | None, **overrides: Any) -> TrainConfig:
    """``base`` (default: TrainConfig()) with the non-None ``overrides``.

    A different preset drops the base's ``model_overrides`` (a tuned width belongs to the tuned
    preset); ``model_overrides`` given here merge into the base's.
    """
    values: dict[str, Any] = base.model_dump() if base is not None else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("preset", values.get("preset")) != values.get("preset"):
        values.pop("model_overrides", None)
    if "model_overrides" in given:
        given["model_overrides"] = {**values.get("model_overrides", {}), **given["model_overrides"]}
    if "precision" in given:
        given["export"] = {**values.get("export", {}), "precision": given.pop("precision")}
    if given.get("ema_decay") == 0:  # 0 on the command line: no moving average
        given["ema_decay"] = None
        values["ema_decay"] = None
    values.update(given)
    return TrainConfig.model_validate(values)


def default_config(fmt: str | None, **overrides: Any) -> TrainConfig:
    """The format's default recipe (Frappe: ``training/recipes/frappe.yaml``) under explicit ``overrides``."""
    from training.recipes import default_recipe

    recipe = default_recipe(fmt)
    return apply_overrides(recipe.train if recipe is not None else None, **overrides)
