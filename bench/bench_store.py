"""Store scale check: 10^6 vectors in shards; open time, reading a small subset, and a dataset-sized read.

    python bench/bench_store.py [--rows 1000000] [--dim 16]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extractor.backbones import get_spec, make_fingerprint  # noqa: E402
from extractor.store import FeatureStore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=16)
    args = parser.parse_args()
    fp = make_fingerprint(get_spec("tiny"), 32, f"bench-dim-{args.dim}")
    fp = type(fp)(fp.id, fp.backbone, args.dim, fp.spec, "bench")
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(args.rows)]
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(tmp)
        start = time.perf_counter()
        with store.writer(fp, shard_rows=65536) as writer:
            for i in range(0, args.rows, 65536):
                block = shas[i:i + 65536]
                writer.add(block, np.full((len(block), args.dim), i, np.float32))
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        opened = FeatureStore(tmp)
        open_s = time.perf_counter() - start
        rng = np.random.default_rng(0)
        subset = [shas[i] for i in rng.choice(args.rows, 1000, replace=False)]
        start = time.perf_counter()
        vectors = opened.read(fp.id, subset, args.dim)
        subset_s = time.perf_counter() - start
        assert vectors.shape == (1000, args.dim)
        shard_files = len(list(store.shard_dir(fp.id).glob("*.h5")))
    print(json.dumps({"rows": args.rows, "dim": args.dim, "shards": shard_files, "write_s": round(write_s, 2),
                      "open_s": round(open_s, 4), "read_1000_random_s": round(subset_s, 3)}, indent=1))


if __name__ == "__main__":
    main()
