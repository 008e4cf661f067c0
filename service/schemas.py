"""Request bodies of the API: plain JSON fields only (never a URL, a pickle or a model file)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from extractor.errors import HeadstartError
from extractor.names import NAME_PATTERN, check_name

NAME = NAME_PATTERN
ParamValue = float | int | str | bool | None | list[int] | list[float]


def valid_name(value: str) -> str:
    """The names rule (extractor.names) as a validation error."""
    try:
        return check_name("name", value)
    except HeadstartError as exc:
        raise ValueError(str(exc)) from None


def valid_recipe(value: str | None) -> str | None:
    """An augmentation recipe (extractor.augment) as a validation error."""
    from extractor.augment import parse

    if value is None:
        return None
    try:
        parse(value)
    except HeadstartError as exc:
        raise ValueError(str(exc)) from None
    return value


def known_backbone(value: str) -> str:
    from extractor.backbones import REGISTRY

    if value not in REGISTRY:
        raise ValueError(f"unknown backbone {value!r}; expected one of: {', '.join(sorted(REGISTRY))}")
    return value


def known_head(value: str) -> str:
    from classifiers.heads import registry

    if value not in registry():
        raise ValueError(f"unknown head {value!r}; expected one of: {', '.join(sorted(registry()))}")
    return value


class ExtractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str = Field(pattern=NAME, description="name to record the dataset under")
    path: str = Field(min_length=1, max_length=1024, description="folder relative to the data root")
    labels_csv: str | None = Field(default=None, max_length=1024, description="CSV relative to the data root")
    unlabeled: bool = False
    backbone: str = Field(default="vgg16", pattern=r"^[a-z0-9_]{1,32}$")
    weights: str = Field(default="imagenet", description="imagenet, random or random:SEED (no files over the API)")
    size: int | None = Field(default=None, ge=8, le=1024)
    dtype: Literal["float32", "float16"] = "float32"
    split: str | None = Field(default=None, max_length=64, description="train,val,test fractions, e.g. 0.6,0.2,0.2")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    augment: str | None = Field(default=None, max_length=200,
                                description="also cache augmented views of every train image: classic, crop, or "
                                            "terms like flip,rotate=30,shift=0.1,zoom=0.2,crop=0.5")
    views: int = Field(default=0, ge=0, le=64, description="views per train image (with augment)")
    add: bool = Field(default=False, description="add this folder to an existing dataset's folders")
    redefine: bool = Field(default=False, description="replace what an existing dataset is made of with this")

    _backbone = field_validator("backbone")(known_backbone)
    _names = field_validator("dataset")(valid_name)
    _recipe = field_validator("augment")(lambda value: valid_recipe(value))

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        if not re.fullmatch(r"imagenet|random(:\d{1,9})?", value):
            raise ValueError("weights must be imagenet, random or random:SEED")
        return value


class HeadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=NAME)
    dataset: str = Field(pattern=NAME)
    backbone: str = Field(default="vgg16", pattern=r"^[a-z0-9_]{1,32}$")
    head: str = Field(default="logreg", pattern=r"^[a-z0-9_]{1,32}$")
    weights: str | None = Field(default=None, pattern=r"^(imagenet|random(:\d{1,9})?)$")
    params: dict[str, ParamValue] = Field(default_factory=dict, max_length=32)
    views: int = Field(default=0, ge=0, le=64, description="also train on this many cached views per train image")
    augment: str | None = Field(default=None, max_length=200, description="which recipe's views (when several)")
    background: bool = Field(default=False, description="run as a job and answer 202 with its id")

    _backbone = field_validator("backbone")(known_backbone)
    _head = field_validator("head")(known_head)
    _names = field_validator("name", "dataset")(valid_name)
    _recipe = field_validator("augment")(lambda value: valid_recipe(value))

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict) -> dict:
        if "device" in value:
            raise ValueError("device is set by the service, not per request")
        return value


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
