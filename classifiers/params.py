"""Parameters of every head kind and of fine-tuning, as pydantic models: one per kind, validated the same way by
the CLI and the API (where they are typed in the OpenAPI schema). A field's description is what the one-line
error says is expected."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from extractor.errors import HeadstartError

Width = Annotated[int, Field(ge=1, le=16384)]


class Params(BaseModel):
    """Strict: an integer is an integer (not a bool, a float or a string); numbers are finite."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


ClassWeight = Literal["balanced"] | None
CLASS_WEIGHT = "balanced or null (weigh classes by their inverse frequency, or not)"


class LogRegParams(Params):
    C: Annotated[float, Field(gt=0, le=1e6)] | Literal["auto"] = Field(
        1.0, description="a number > 0 and <= 1e6 (inverse regularisation strength), or auto: chosen on the val split "
                         "from a sweep (the linear-probe protocol)")
    max_iter: int = Field(1000, ge=1, le=1_000_000, description="an integer from 1 to 1000000")
    tol: float = Field(1e-4, gt=0, le=1, description="a number > 0 and <= 1")
    class_weight: ClassWeight = Field(None, description=CLASS_WEIGHT)


class MLPParams(Params):
    hidden: list[Width] = Field([512, 512], min_length=1, max_length=8,
                                description="1 to 8 layer widths, each an integer from 1 to 16384 (e.g. 512,512)")
    dropout: float = Field(0.3, ge=0, lt=1, description="a number from 0 up to (not including) 1")
    lr: float = Field(1e-3, gt=0, le=10, description="a number > 0 and <= 10")
    weight_decay: float = Field(0.0, ge=0, le=10, description="a number >= 0 and <= 10")
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=1 << 20)] = Field(
        "auto", description="auto or an integer >= 1 (auto: about 12 steps an epoch, 32 to 256 rows)")
    epochs: int = Field(30, ge=1, le=100_000, description="an integer from 1 to 100000")
    patience: int = Field(5, ge=1, le=100_000, description="an integer from 1 to 100000")
    class_weight: ClassWeight = Field(None, description=CLASS_WEIGHT)
    seed: int = Field(0, ge=0, le=2**63 - 1, description="an integer >= 0")


class CentroidParams(Params):
    temperature: float | None = Field(None, gt=0, le=1e4,
                                      description="a number > 0 and <= 10000, or null to fit it on val")


# each head kind's parameters, in the order help lists them, and the kinds that also take `device` (where they run):
# what the CLI's help needs without importing the heads (the dense head imports torch); test_heads checks the classes
HEADS: dict[str, type[Params]] = {"logreg": LogRegParams, "mlp": MLPParams, "centroid": CentroidParams}
ON_DEVICE = frozenset({"mlp"})


class FinetuneParams(Params):
    """Fine-tuning: the ladder's recipe by default (last two stages, low learning rate, classic augmentation)."""

    unfreeze: int = Field(2, ge=1, le=64, description="an integer >= 1: how many of the last stages train")
    epochs: int = Field(30, ge=1, le=100_000, description="an integer from 1 to 100000")
    lr: float = Field(1e-5, gt=0, le=1, description="a number > 0 and <= 1 (the unfrozen stages' learning rate)")
    head_lr: float = Field(1e-4, gt=0, le=1, description="a number > 0 and <= 1 (the head's learning rate)")
    augment: str | None = Field("classic", max_length=200,
                                description="a recipe (classic, crop, terms like flip,rotate=30) or null for none")
    batch_size: int = Field(32, ge=1, le=4096, description="an integer from 1 to 4096")
    patience: int = Field(5, ge=1, le=100_000, description="an integer from 1 to 100000 (epochs without a better "
                                                           "val accuracy before stopping)")
    hidden: list[Width] = Field([256], min_length=1, max_length=4,
                                description="1 to 4 layer widths of the head, each from 1 to 16384")
    dropout: float = Field(0.5, ge=0, lt=1, description="a number from 0 up to (not including) 1")
    warm_start: bool = Field(True, description="true or false: first fit the head on the dataset's cached features")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="an integer >= 0")


def check(what: str, model: type[Params], values: dict) -> Params:
    """`values` as `model`, or one line naming the first parameter that is wrong and what it expects."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise HeadstartError(describe(what, model, exc, values)) from None


def describe(what: str, model: type[Params], exc: ValidationError, values: dict) -> str:
    """One line for the first error: the parameter, the value given, what it expects."""
    e = exc.errors()[0]
    name = str(e["loc"][0]) if e["loc"] else "?"
    if e["type"] == "extra_forbidden":
        return f"{what} has no parameter {name!r}; expected some of: {', '.join(model.model_fields)}"
    field = model.model_fields.get(name)
    expected = field.description if field and field.description else e["msg"]
    return f"{what} parameter {name}={json.dumps(values.get(name), default=str)}: expected {expected}"
