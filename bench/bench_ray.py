"""The Ray engine and streamed heads, measured on this machine (ratios from one run; absolute times are context).

1. end to end: img/s of --engine ray / --engine local on the same JPEGs (vgg16@150, random weights), each run in
   a fresh home; the local Ray cluster's start-up is reported apart;
2. commit path: actors write 8192-d float16 shards from an instant forward (vectors of the right shape; shard
   files, reports and the driver's catalog commits real), with 2, 4 and 8 actors: vectors/s committed end to end,
   and the driver's commit capacity (vectors / seconds spent in its catalog transactions);
3. heads on a synthetic N x 2048 float16 table (streamed: HEADSTART_STREAM_MB default): peak RSS of
   `headstart train --head mlp`, `--head logreg` and logreg with C=auto (each its own process), seconds per
   epoch, and C=auto's wall time over the fixed C's (six streamed fits, one standardiser pass).

    python bench/bench_ray.py [--images 240] [--views K] [--vectors 20000] [--rows 1000000]
                              [--skip-heads | --heads-only]

With --views K, each end-to-end run then computes K classic views per train image in its home, timed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_extract import make_jpegs  # noqa: E402
from bench.synthetic import synthetic_table  # noqa: E402
from extractor import engine_ray, ray_cluster  # noqa: E402
from extractor.backbones import Fingerprint  # noqa: E402
from extractor.pipeline import ExtractOptions, extract  # noqa: E402
from extractor.store import FeatureStore  # noqa: E402


def end_to_end(images: int, work: Path, views: int = 0) -> dict:
    data = work / "jpegs"
    make_jpegs(data, images)
    started = time.monotonic()
    ray_cluster.connect(None)
    startup = time.monotonic() - started
    rates = {}
    for engine in ("local", "ray", "local", "ray"):  # interleaved: the machine is shared and noisy
        opts = ExtractOptions(data_dir=data, dataset="bench", backbone="vgg16", weights="random", engine=engine,
                              batch_size=32)
        home = Path(tempfile.mkdtemp(dir=work))
        t = time.monotonic()
        summary = extract(opts, FeatureStore(home))
        assert summary.extracted == images, summary
        rates.setdefault(engine, []).append(images / (time.monotonic() - t))
        if views:  # then the train images' views alone, in the same home (the clean vectors are cached)
            t = time.monotonic()
            made = extract(replace(opts, augment="classic", views=views), FeatureStore(home)).views["computed"]
            assert made > 0, made
            rates.setdefault(f"{engine}_views", []).append(made / (time.monotonic() - t))
    best = {e: max(r) for e, r in rates.items()}
    out = {"images": images, "ray_startup_s": round(startup, 2), "local_img_s": round(best["local"], 2),
           "ray_img_s": round(best["ray"], 2), "ray_over_local": round(best["ray"] / best["local"], 3)}
    if views:
        out.update(views_per_image=views, local_views_s=round(best["local_views"], 2),
                   ray_views_s=round(best["ray_views"], 2),
                   views_ray_over_local=round(best["ray_views"] / best["local_views"], 3))
    return out


class InstantActor(engine_ray.ShardActor):
    """The shipped actor with the forward replaced by vectors of the right shape (shard writing unchanged)."""

    def setup(self, backbone, weights, size, device, amp, threads) -> None:
        self.dim, self.folder = 8192, engine_ray.shard_folder(self.home, self.fp_id)
        self.rng = np.random.default_rng(os.getpid())

    def embed(self, pixels: np.ndarray) -> list[np.ndarray]:
        return [self.rng.standard_normal((len(pixels), self.dim), dtype=np.float32)]


def no_decode(batch: dict, size: int, limits, roots: list[str], recipe: str = "", device_decode: bool = False) -> dict:
    n = len(batch["sha"])
    return {"sha": batch["sha"], "view": np.full(n, -1, np.int32), "pixels": np.zeros((n, 1, 1, 3), np.uint8),
            "error": np.array([""] * n, object),
            "content": np.zeros(n, bool), "fatal": np.array([""] * n, object)}


class TimedCommits:
    """The driver's writer, with the seconds spent in its catalog commits counted."""

    def __init__(self, writer) -> None:
        self.writer, self.seconds, self.recipe = writer, 0.0, writer.recipe

    def commit(self, shards, views=None) -> None:
        t = time.perf_counter()
        self.writer.commit(shards, views)
        self.seconds += time.perf_counter() - t

    def clean(self) -> None:
        self.writer.clean()

    @property
    def written(self) -> int:
        return self.writer.written


def commit_path(vectors: int, actors: int, work: Path) -> dict:
    from extractor.backbones import PREPROCESS_METHOD, get_spec
    from extractor.model import Resolved

    store = FeatureStore(Path(tempfile.mkdtemp(dir=work)))
    fp = Fingerprint(id="bench-instant8192", backbone="vgg16", dim=8192, source="bench",
                     spec={"backbone": "vgg16", "preprocess": {"method": PREPROCESS_METHOD}})
    jobs = [(f"{i:064x}", Path("/nonexistent"), None) for i in range(vectors)]
    opts = ExtractOptions(data_dir=work, dataset="bench", dtype="float16", actors=actors, device="cpu",
                          engine="ray", weights="random")
    resolved = Resolved(spec=get_spec("vgg16"), size=1, weights=None, fingerprint=fp)
    with store.writer(fp, "float16") as writer:
        timed = TimedCommits(writer)
        t = time.monotonic()
        written, _, _ = engine_ray.compute(opts, store, resolved, jobs, [], None, None, timed, actor=InstantActor,
                                           decode=no_decode)
        seconds = time.monotonic() - t
    assert written == vectors, written
    shards = len(store.catalog.shards(fp.id))
    return {"actors": actors, "vectors": vectors, "shards": shards, "seconds": round(seconds, 2),
            "committed_vectors_s": round(vectors / seconds), "commit_seconds": round(timed.seconds, 3),
            "driver_commit_capacity_vectors_s": round(vectors / timed.seconds)}


def heads(rows: int, work: Path) -> list[dict]:
    home = work / f"table{rows}"
    if not (home / "catalog.sqlite").exists():
        t = time.monotonic()
        synthetic_table(home, rows, 2048, classes=10, dtype="float16", shard_rows=4096)
        print(f"  wrote {rows} x 2048 float16 in {time.monotonic() - t:.0f} s", file=sys.stderr)
    out = []
    for label, kind, params in (("mlp", "mlp", ["epochs=1"]), ("logreg", "logreg", ["max_iter=2"]),
                                ("logreg C=auto", "logreg", ["max_iter=2", "C=auto"])):
        name = label.replace(" ", "-").replace("=", "-")
        args = [sys.executable, "-m", "service", "train", "--home", str(home), "--dataset", "synthetic", "--backbone",
                "tiny", "--head", kind, "--name", name, "--json", *[x for p in params for x in ("--param", p)]]
        t = time.monotonic()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - t
        stdout, stderr = proc.stdout.read(), proc.stderr.read()
        if status != 0:
            raise SystemExit(f"train {kind} failed: {stderr[-500:]}")
        history = _history(home, name)
        out.append({"head": label, "rows": rows, "peak_rss_mb": round(usage.ru_maxrss / 1024),
                    "seconds": round(seconds, 1), "epochs": len(history),
                    "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in history])), 1) if history else None,
                    "test_accuracy": json.loads(stdout.strip().splitlines()[-1])["metrics"]["test"]["accuracy"]
                    if stdout.strip() else None})
    by = {row["head"]: row for row in out}
    by["logreg C=auto"]["wall_over_fixed_c"] = round(by["logreg C=auto"]["seconds"] / by["logreg"]["seconds"], 2)
    return out


def _history(home: Path, name: str) -> list[dict]:
    from classifiers.persist import load

    head, _ = load(home / "heads", name)
    return head.history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--vectors", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--views", type=int, default=0, help="also time K classic views per train image")
    parser.add_argument("--skip-heads", action="store_true")
    parser.add_argument("--heads-only", action="store_true")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "headstart-bench-ray")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.heads_only:
        print(json.dumps({"end_to_end": end_to_end(args.images, args.work, args.views)}), flush=True)
        for actors in (2, 4, 8):
            print(json.dumps({"commit_path": commit_path(args.vectors, actors, args.work)}), flush=True)
    if not args.skip_heads:
        for row in heads(args.rows, args.work):
            print(json.dumps({"heads": row}), flush=True)


if __name__ == "__main__":
    main()
