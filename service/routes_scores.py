"""HTTP routes that score a saved head from the cache (no forward pass): its metrics, mistakes and ROC curves on a
split of its dataset or of another, and predictions for a dataset's images."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from classifiers.evaluation import evaluate_head
from classifiers.persist import heads_dir, load
from classifiers.predict import cached_predictions
from classifiers.review import mistakes, roc_points
from service.routes import HEAD_NAME, state
from service.schemas import ERROR_RESPONSES, NAME

router = APIRouter(responses=ERROR_RESPONSES)
Split = Literal["train", "val", "test", "all"]
OTHER_DATASET = Query(None, pattern=NAME, description="another labeled dataset extracted with the head's features "
                                                      "(a holdout set); default: the head's own")
SPLIT = Query(None, description="default: test on the head's own dataset, all on another")


@router.get("/heads/{name}/mistakes", tags=["heads"])
async def head_mistakes(request: Request, name: str = HEAD_NAME,
                       split: Split | None = SPLIT, dataset: str | None = OTHER_DATASET,
                       true: str | None = Query(None, max_length=200, description="only images of this class"),
                       predicted: str | None = Query(None, max_length=200, description="only images predicted so"),
                       limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
                       order: Literal["confident", "unsure"] = Query("confident", description="most or least "
                                                                      "confident first")) -> dict:
    """The head's misclassified images on a split (or all) of its dataset or of another, most confident first (a
    confusion-matrix cell with `true` and `predicted`); each row's `sha256` names its thumbnail in the answer's
    `dataset`."""
    return await run_in_threadpool(mistakes, state(request).store, name, split, true, predicted, limit, offset,
                                   order, dataset)


@router.get("/heads/{name}/roc", tags=["heads"])
async def head_roc(request: Request, name: str = HEAD_NAME,
                   split: Split | None = SPLIT, dataset: str | None = OTHER_DATASET) -> dict:
    """The head's ROC curves on a split (or all) of its dataset or of another (one per class, thinned to 101
    points), with AUCs."""
    return await run_in_threadpool(roc_points, state(request).store, name, split, dataset=dataset)


@router.get("/heads/{name}/evaluation", tags=["heads"])
async def head_evaluation(request: Request, name: str = HEAD_NAME,
                          dataset: str | None = OTHER_DATASET, split: Split | None = SPLIT) -> dict:
    """The head's metrics on a split of its own dataset or of another labeled dataset extracted with the head's
    features (cached vectors; no forward pass): accuracy, F1, per class, the confusion matrix, and warnings
    (labels the head never saw, images it learned from, classes too small to judge by)."""
    result = await run_in_threadpool(evaluate_head, state(request).store, name, split, dataset=dataset)
    return {k: v for k, v in result.items() if k != "plots"}


@router.get("/heads/{name}/predictions", tags=["heads"])
async def head_predictions(request: Request, name: str = HEAD_NAME,
                           dataset: str = Query(..., pattern=NAME, description="a dataset extracted with the head's "
                                                                              "features, labeled or not"),
                           split: Split = Query("all"),
                           top_k_: int = Query(3, alias="top_k", ge=1, le=100),
                           limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9)) -> dict:
    """Top-k labels for a dataset's images from their cached vectors (no forward pass; as `predict --dataset`), by
    path, `limit` at a time: extract a folder with POST /extract, then read its predictions page by page. Refused
    while some of its images have no vector of the head's features (a page of some would pass for the whole)."""
    def answer() -> dict:
        head, manifest = load(heads_dir(state(request).store), name)
        total, rows = cached_predictions(state(request).store, head, manifest, dataset,
                                         None if split == "all" else split, top_k_, offset, limit)
        return {"head": name, "dataset": dataset, "split": split, "total": total,
                "rows": [{"path": r["image"], "sha256": r["sha256"], "split": r["split"], "true": r["true_label"],
                          "top": r["top"]} for r in rows]}

    return await run_in_threadpool(answer)
