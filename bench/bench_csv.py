"""Reading a labels CSV of N rows over a folder of N files: the shipped scan (paths found in one walk of the folder's
real files) against the same scan with every row resolved by realpath and isfile (the way each row was resolved
before, still the way for absolute paths, `..` and symlinks). Ratios from one run; absolute times are context.

    .venv/bin/python -m bench.bench_csv [--rows 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from unittest import mock

from extractor import labelcsv


def build(root: Path, rows: int) -> Path:
    data = root / "data"
    for i in range(rows):
        folder = data / f"class{i % 10}" / f"part{i // 1000}"
        if i < 10 * 1000 or i % 1000 < 10:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.jpg").write_bytes(b"")
    lines = ["id,label"] + [f"class{i % 10}/part{i // 1000}/{i},c{i % 10}" for i in range(rows)]  # ids: no suffix
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return data


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = build(Path(tmp), args.rows)
        csv_path = Path(tmp) / "labels.csv"
        found = len(labelcsv.scan_csv(data, csv_path).items)
        assert found == args.rows, found
        fast = best(lambda: labelcsv.scan_csv(data, csv_path), args.repeat)
        with mock.patch.object(labelcsv, "_plain_files", lambda root: set()):
            assert len(labelcsv.scan_csv(data, csv_path).items) == args.rows
            slow = best(lambda: labelcsv.scan_csv(data, csv_path), args.repeat)
    print(f"labels CSV, {args.rows:,} rows of ids (suffix guessed), best of {args.repeat}:")
    print(f"  each row by realpath + isfile : {slow:6.2f} s  ({slow / args.rows * 1e6:5.1f} us/row)")
    print(f"  rows found in one folder walk : {fast:6.2f} s  ({fast / args.rows * 1e6:5.1f} us/row)")
    print(f"  ratio                         : {slow / fast:6.2f}x")


if __name__ == "__main__":
    main()
