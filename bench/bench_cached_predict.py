"""Heads scored from the cache, side by side on one synthetic table. Predictions of a whole dataset (`predict
--dataset`, `GET /heads/{name}/predictions`): the chunked reader against reading the whole table first (what predict
--dataset did before), time and peak traced memory; the latency of one API page. Evaluation (`evaluate`): block by
block (now the default) against the whole table (`--stream never`, before the default for tables under 1 GB). The
scores that the mistakes and ROC views keep: read and scored in blocks against all rows at once (before).

    python bench/bench_cached_predict.py [--rows 100000] [--dim 2048] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.synthetic import synthetic_table  # noqa: E402
from classifiers import review  # noqa: E402
from classifiers.evaluation import evaluate_head  # noqa: E402
from classifiers.persist import heads_dir, load  # noqa: E402
from classifiers.predict import cached_predictions, top_k_rows  # noqa: E402
from classifiers.training import train_head  # noqa: E402


def row_top_k(proba, classes, k: int) -> list[dict]:
    """Top-k of one row as it was computed before (ranked and rounded value by value)."""
    order = np.argsort(-proba)[:k]
    return [{"label": str(classes[i]), "probability": round(float(proba[i]), 6)} for i in order]


def whole_table(store, head, manifest, dataset: str, k: int) -> list[dict]:
    """The way before (predict --dataset up to ff30330): every vector of the dataset in memory, then scored at
    once, top-k row by row."""
    table = store.table(dataset, manifest["fingerprint"]["id"])
    proba = head.predict_proba(table.features)
    return [{"image": p, "top": row_top_k(row, head.classes_, k)} for p, row in zip(table.paths, proba, strict=True)]


def listed_page(store, head, manifest, dataset: str, k: int, offset: int, limit: int) -> list[dict]:
    """A page the way this change first built it: every member listed in Python (coverage, then the rows), sliced."""
    fp_id = manifest["fingerprint"]["id"]
    if not all(has for *_, has in store.catalog.coverage(dataset, fp_id)):
        raise SystemExit("the synthetic table lacks vectors")
    page = store.catalog.dataset_rows(dataset, fp_id)[offset:offset + limit]
    proba = head.predict_proba(store.read_rows([(r[4], r[5]) for r in page], int(manifest["dim"])))
    return [{"image": r[0], "top": top} for r, top in zip(page, top_k_rows(proba, head.classes_, k), strict=True)]


def best_of(n: int, fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(n):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), out


def measured(fn) -> tuple[float, float, object]:
    """Seconds of an untraced run, then the peak traced memory of a second run (tracing slows Python's
    allocations, so it never times)."""
    started = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store, _ = synthetic_table(Path(tmp), args.rows, args.dim, dtype="float16")
        train_head(store, "synthetic", "tiny", "centroid", "h")
        head, manifest = load(heads_dir(store), "h")
        print(f"{args.rows:,} rows x {args.dim} (float16 shards), centroid head, 10 classes")
        for r in range(args.rounds):
            t_old, m_old, old = measured(lambda: whole_table(store, head, manifest, "synthetic", 3))
            t_new, m_new, (_, new) = measured(lambda: cached_predictions(store, head, manifest, "synthetic", None, 3))
            assert [o["top"] for o in old] == [n["top"] for n in new]  # the same answers, in the same order
            print(f"round {r + 1}: whole table {t_old:.2f} s, peak {m_old:,.0f} MiB | chunked {t_new:.2f} s, peak "
                  f"{m_new:,.0f} MiB | time new/old {t_new / t_old:.2f}, memory old/new {m_old / m_new:.1f}x")
        for limit, offset in ((100, 0), (1000, args.rows // 2), (1000, args.rows - 1000)):
            t_list, listed = best_of(5, lambda o=offset, n=limit: listed_page(store, head, manifest, "synthetic",
                                                                                  3, o, n))
            t_sql, (_, paged) = best_of(5, lambda o=offset, n=limit: cached_predictions(
                store, head, manifest, "synthetic", None, 3, o, n))
            assert [r["top"] for r in listed] == [r["top"] for r in paged]
            print(f"one page of {limit} at offset {offset:,} (best of 5): listed {t_list * 1000:.0f} ms, paged by "
                  f"SQLite {t_sql * 1000:.0f} ms: {t_list / t_sql:.1f}x")
        for split in ("test", "all"):
            t_whole, whole = best_of(2, lambda s=split: evaluate_head(store, "h", s, stream="never"))
            t_blocks, blocks = best_of(2, lambda s=split: evaluate_head(store, "h", s))
            assert whole["metrics"]["confusion_matrix"] == blocks["metrics"]["confusion_matrix"]
            print(f"evaluate on {split} (best of 2): whole table {t_whole:.2f} s, block by block {t_blocks:.2f} s: "
                  f"{t_whole / t_blocks:.1f}x")
        block = review.PREDICT_CHUNK
        for r in range(args.rounds):
            times = {}
            for rows in (10**12, block):  # all at once, as before; then in blocks
                review.PREDICT_CHUNK = rows
                review._scored.clear()  # scored again, not answered from the kept scores
                times[rows] = best_of(1, lambda: review.roc_points(store, "h", "all"))[0]
            print(f"round {r + 1}: ROC curves on all rows, scores kept for the page: all rows at once "
                  f"{times[10**12]:.2f} s, in blocks {times[block]:.2f} s: {times[10**12] / times[block]:.1f}x")
        review.PREDICT_CHUNK = block


if __name__ == "__main__":
    main()
