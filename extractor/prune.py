"""Freeing cache space. Vectors are kept by content, so forgetting a dataset (`datasets rm`) frees nothing at
once: its vectors may be another dataset's too, and a re-extract finds them. `prune` then deletes the shards
whose every row (vector or view) is of content no dataset holds, one fingerprint at a time under its writer lock,
and the remembered hashes of files below no dataset's folder. A shard is freed whole: rows no dataset needs beside
rows one does stay, and are counted."""

from __future__ import annotations

import json

from extractor.errors import Conflict, NotFound
from extractor.locks import Busy
from extractor.store import FeatureStore

# shards of one fingerprint none of whose rows is the content of a dataset member
UNUSED_SHARDS = (
    "SELECT s.id, s.file, s.rows, COALESCE(s.bytes, 0) FROM shards s WHERE s.fingerprint = ? "
    "AND NOT EXISTS (SELECT 1 FROM vectors v JOIN members m ON m.sha256 = v.sha256 WHERE v.shard = s.id) "
    "AND NOT EXISTS (SELECT 1 FROM views w JOIN members m ON m.sha256 = w.sha256 WHERE w.shard = s.id) "
    "ORDER BY s.id")
# remembered file hashes below no dataset's folder (a removed dataset's, a folder given again by another path)
UNUSED_HASHES = ("FROM files WHERE NOT EXISTS (SELECT 1 FROM sources s WHERE files.path >= rtrim(s.root, '/') || '/' "
                 "AND files.path < rtrim(s.root, '/') || '0')")
UNUSED_ROWS = (
    "SELECT (SELECT COUNT(*) FROM vectors v WHERE NOT EXISTS (SELECT 1 FROM members m WHERE m.sha256 = v.sha256))"
    " + (SELECT COUNT(*) FROM views w WHERE NOT EXISTS (SELECT 1 FROM members m WHERE m.sha256 = w.sha256))")


def forget_dataset(store: FeatureStore, name: str) -> dict:
    """Forget a dataset (definition, members, failures); its cached vectors stay until `prune`. Says how many
    vectors no other dataset uses (what a prune would free). Refused while a service job for it is queued or
    running, or an extraction of it runs in any process (its end would register it again)."""
    if store.catalog.dataset(name) is None:
        names = ", ".join(store.catalog.dataset_names()) or "none yet"
        raise NotFound(f"no dataset {name!r}; known datasets: {names}")
    busy = [job["id"] for job in store.catalog.jobs(("queued", "running", "cancelling"))
            if json.loads(job["request"] or "{}").get("dataset") == name]
    if busy:
        raise Conflict(f"dataset {name!r} has {len(busy)} job(s) queued or running ({', '.join(busy[:3])}); cancel "
                       f"them or wait for them, then remove it")
    try:
        with store.dataset_lock(name).exclusive():
            with store.catalog.connect() as con:
                alone = con.execute(
                    "SELECT COUNT(*) FROM vectors v WHERE v.sha256 IN (SELECT sha256 FROM members WHERE dataset = ?) "
                    "AND NOT EXISTS (SELECT 1 FROM members o WHERE o.sha256 = v.sha256 AND o.dataset != ?)",
                    (name, name)).fetchone()[0]
            store.catalog.drop_dataset(name)
    except Busy as exc:
        raise Conflict(f"dataset {name!r} is being extracted ({exc.holder}: an `extract`, or a fine-tuning that "
                       f"extracts); wait for it to finish or stop it, then remove it") from None
    return {"deleted": name, "vectors_only_its": alone}


def prune(store: FeatureStore, dry_run: bool = False) -> dict:
    """Delete the shards no dataset needs (catalog rows first, in one transaction per fingerprint that checks
    again under the writer lock; then the files). A fingerprint being written is skipped and named."""
    report = {"shards": 0, "vectors": 0, "bytes": 0, "busy": [], "dry_run": dry_run}
    with store.catalog.connect() as con:
        fingerprints = [r[0] for r in con.execute("SELECT DISTINCT fingerprint FROM shards ORDER BY 1")]
    for fp_id in fingerprints:
        if dry_run:
            with store.catalog.connect() as con:
                _count(report, con.execute(UNUSED_SHARDS, (fp_id,)).fetchall())
            continue
        try:
            lock = store.writer_lock(fp_id).acquire()
        except Conflict:
            report["busy"].append(fp_id)
            continue
        try:
            dropped = _drop_unused(store, fp_id)
            for _, file, _, _ in dropped:  # after the commit: a crash here leaves files verify --repair deletes
                (store.home / file).unlink(missing_ok=True)
            _count(report, dropped)
        finally:
            lock.release()
    with store.catalog.connect() as con, con:
        report["unused_rows_kept"] = con.execute(UNUSED_ROWS).fetchone()[0] - (report["vectors"] if dry_run else 0)
        report["file_hashes"] = con.execute(f"SELECT COUNT(*) {UNUSED_HASHES}").fetchone()[0] if dry_run else \
            con.execute(f"DELETE {UNUSED_HASHES}").rowcount
    return report


def _drop_unused(store: FeatureStore, fp_id: str) -> list[tuple]:
    """Select and forget the unused shards of a fingerprint in one write transaction: a dataset registered
    meanwhile (an extract listing the same content) either commits first, and its shards are kept, or after."""
    with store.catalog.connect() as con:
        con.execute("BEGIN IMMEDIATE")
        try:
            dropped = con.execute(UNUSED_SHARDS, (fp_id,)).fetchall()
            for shard, *_ in dropped:
                con.execute("DELETE FROM vectors WHERE shard = ?", (shard,))
                con.execute("DELETE FROM views WHERE shard = ?", (shard,))
                con.execute("DELETE FROM shards WHERE id = ?", (shard,))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return dropped


def _count(report: dict, shards: list[tuple]) -> None:
    report["shards"] += len(shards)
    report["vectors"] += sum(rows for _, _, rows, _ in shards)
    report["bytes"] += sum(size for *_, size in shards)
