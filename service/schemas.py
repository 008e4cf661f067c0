"""Request bodies of the API: plain JSON fields only (never a URL, a pickle or a model file)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from classifiers.params import CentroidParams, FinetuneParams, LogRegParams, MLPParams
from extractor.backbones import MAX_SIZE
from extractor.errors import HeadstartError
from extractor.names import NAME_PATTERN, check_name
from service.cli import CACHED_BACKBONE

NAME = NAME_PATTERN
BACKBONE = r"^[a-z0-9_]{1,32}$"
WEIGHTS = r"^(imagenet|random(:\d{1,9})?|head:[A-Za-z0-9][A-Za-z0-9._-]{0,63})$"


def field_error(check: Callable[[str], object], value: str) -> str:
    """`value` when `check` accepts it; its one-line HeadstartError as a validation error otherwise."""
    try:
        check(value)
    except HeadstartError as exc:
        raise ValueError(str(exc)) from None
    return value


def valid_name(value: str) -> str:
    """The names rule (extractor.names) as a validation error."""
    return field_error(lambda v: check_name("name", v), value)


def valid_recipe(value: str | None) -> str | None:
    """An augmentation recipe (extractor.augment) as a validation error."""
    from extractor.augment import parse

    return None if value is None else field_error(parse, value)


def known_backbone(value: str | None) -> str | None:
    """A registry backbone or any torchvision classification model (the error names close matches)."""
    from extractor.backbones import get_spec

    return value if value is None else field_error(get_spec, value)


def api_weights(value: str) -> str:
    """Weights the API accepts: no files over the API."""
    if not re.fullmatch(r"imagenet|random(:\d{1,9})?", value):
        raise ValueError("weights must be imagenet, random or random:SEED")
    return value


class ExtractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str = Field(pattern=NAME, description="name to record the dataset under")
    path: str = Field(min_length=1, max_length=1024, description="folder relative to the data root")
    labels_csv: str | None = Field(default=None, max_length=1024, description="CSV relative to the data root")
    unlabeled: bool = False
    name_labels: bool = Field(default=False, description="label every image by its file name: cat.12.jpg -> cat, "
                                                         "american_bulldog_10.jpg -> american_bulldog")
    backbone: str = Field(default="vgg16", pattern=BACKBONE)
    weights: str = Field(default="imagenet", description="imagenet, random or random:SEED (no files over the API)")
    size: int | None = Field(default=None, ge=8, le=MAX_SIZE)
    dtype: Literal["float32", "float16"] = "float32"
    split: str | None = Field(default=None, max_length=64, description="train,val,test fractions, e.g. 0.6,0.2,0.2")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    augment: str | None = Field(default=None, max_length=200,
                                description="also cache augmented views of every train image: classic, crop, or "
                                            "terms like flip,rotate=30,shift=0.1,zoom=0.2,crop=0.5")
    views: int = Field(default=0, ge=0, le=64, description="views per train image (with augment)")
    decode: Literal["auto", "cpu", "gpu"] = Field(
        default="auto", description="where JPEGs are decoded: cpu (Pillow), gpu (nvJPEG on the server's GPU; features "
                                    "of their own), auto (the path measured faster: cpu today)")
    add: bool = Field(default=False, description="add this folder to an existing dataset's folders")
    redefine: bool = Field(default=False, description="replace what an existing dataset is made of with this")

    _backbone = field_validator("backbone")(known_backbone)
    _names = field_validator("dataset")(valid_name)
    _recipe = field_validator("augment")(lambda value: valid_recipe(value))

    _weights = field_validator("weights")(api_weights)


class HeadBase(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=NAME)
    dataset: str = Field(pattern=NAME)
    backbone: str | None = Field(default=None, pattern=BACKBONE, description=CACHED_BACKBONE)
    weights: str | None = Field(default=None, pattern=WEIGHTS,
                                description="which cached features: imagenet, random[:SEED] or head:NAME")
    views: int = Field(default=0, ge=0, le=64, description="also train on this many cached views per train image")
    augment: str | None = Field(default=None, max_length=200, description="which recipe's views (when several)")
    background: bool = Field(default=False, description="run as a job and answer 202 with its id")

    _backbone = field_validator("backbone")(known_backbone)
    _names = field_validator("name", "dataset")(valid_name)
    _recipe = field_validator("augment")(lambda value: valid_recipe(value))


class LogRegRequest(HeadBase):
    head: Literal["logreg"] = "logreg"
    params: LogRegParams = Field(default_factory=LogRegParams)


class MLPRequest(HeadBase):
    head: Literal["mlp"]
    params: MLPParams = Field(default_factory=MLPParams)


class CentroidRequest(HeadBase):
    head: Literal["centroid"]
    params: CentroidParams = Field(default_factory=CentroidParams)


def _head_kind(body: object) -> str:
    """The head kind of a request body (logreg when it names none)."""
    return body.get("head", "logreg") if isinstance(body, dict) else getattr(body, "head", "logreg")


HeadRequest = Annotated[Annotated[LogRegRequest, Tag("logreg")] | Annotated[MLPRequest, Tag("mlp")]
                        | Annotated[CentroidRequest, Tag("centroid")], Discriminator(_head_kind)]
PARAMS_OF = {"logreg": LogRegParams, "mlp": MLPParams, "centroid": CentroidParams}


def params_error(errors: list[dict]) -> str | None:
    """One line for a request whose only problems are in `params`, as the command line says it; else None."""
    located = [e for e in errors if "params" in e.get("loc", ())[:3] and e["loc"].index("params") < len(e["loc"]) - 1]
    if not located or len(located) != len(errors):
        return None
    e = located[0]
    at = e["loc"].index("params")
    kind, name = (str(e["loc"][1]) if at == 2 else "finetune"), str(e["loc"][at + 1])
    model = PARAMS_OF.get(kind) or FinetuneParams
    what = f"head {kind}" if kind in PARAMS_OF else "finetune"
    field = model.model_fields.get(name)
    if e["type"] == "extra_forbidden":
        return f"{what} has no parameter {name!r}; expected some of: {', '.join(model.model_fields)}"
    given = e["input"] if len(e["loc"]) == at + 2 else f"[... {e['input']!r} ...]"
    expected = field.description if field else e["msg"]
    return f"{what} parameter {name}={json.dumps(given, default=str)}: expected {expected}"


class FinetuneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=NAME, description="name to save the fine-tuned head under")
    dataset: str = Field(pattern=NAME)
    backbone: str | None = Field(default=None, pattern=BACKBONE, description=CACHED_BACKBONE)
    weights: str | None = Field(default=None, pattern=WEIGHTS,
                                description="the weights to start from (default: those of the cached features)")
    params: FinetuneParams = Field(default_factory=FinetuneParams)
    restart: bool = Field(default=False, description="discard an unfinished run's checkpoint and start afresh")

    _backbone = field_validator("backbone")(known_backbone)
    _names = field_validator("name", "dataset")(valid_name)


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str = Field(pattern=NAME)
    backbones: list[str] = Field(min_length=1, max_length=12, description="backbones to rank, e.g. [\"vgg16\", "
                                                                        "\"resnet50\", \"convnext_tiny\"]")
    sample: int | None = Field(default=None, ge=1, le=10_000_000,
                               description="use about this many of the dataset's images (the same ones every run)")
    weights: str = Field(default="imagenet", description="imagenet, random or random:SEED")

    _names = field_validator("dataset")(valid_name)

    @field_validator("backbones")
    @classmethod
    def _backbones(cls, value: list[str]) -> list[str]:
        return [known_backbone(v) for v in dict.fromkeys(value)]

    _weights = field_validator("weights")(api_weights)


class JobAccepted(BaseModel):
    job_id: str
    status_url: str
    created: bool


class ErrorBody(BaseModel):
    """Every error: `detail` is one line, or (422 for a malformed request) where and why each field failed."""

    detail: str | list[dict]


ERROR_RESPONSES: dict[int | str, dict] = {
    code: {"model": ErrorBody, "description": text} for code, text in (
        (400, "bad request (a value the operation cannot use)"), (401, "missing or wrong API key"),
        (403, "path leaves the data root"), (404, "no such dataset, head, job or path"),
        (409, "conflicts with current state (a job ended, a writer is busy)"), (413, "request or image too large"),
        (415, "not a supported image"), (422, "invalid request, or over a limit of this server"),
        (429, "busy (queue full, training slot taken): see Retry-After"), (503, "shutting down or model failure"),
        (507, "the disk under the home is full or read-only"))}
