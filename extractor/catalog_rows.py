"""The catalog's queries of what a dataset's members have under a fingerprint: which have vectors, and where."""

from __future__ import annotations

from collections.abc import Iterator

USABLE = "NOT EXISTS (SELECT 1 FROM failures f WHERE f.dataset = m.dataset AND f.path = m.path)"
HAS_VECTOR = "EXISTS (SELECT 1 FROM vectors v WHERE v.fingerprint = ? AND v.sha256 = m.sha256)"


class RowQueries:
    """Mixed into Catalog (which provides `connect`)."""

    def coverage(self, dataset: str, fp_id: str) -> list[tuple[str, str | None, str, bool]]:
        """(sha256, label, split, has a vector under fp_id) of each usable member, by path: recorded failures (files
        that did not decode are members without vectors) are left out, as in dataset_summary's counts."""
        with self.connect() as con:
            return [(sha, label, split, bool(has)) for sha, label, split, has in con.execute(
                f"SELECT m.sha256, m.label, m.split, {HAS_VECTOR} FROM members m WHERE m.dataset = ? AND {USABLE} "
                "ORDER BY m.path",
                (fp_id, dataset))]

    def dataset_rows(self, dataset: str, fp_id: str) -> list[tuple]:
        """(path, sha256, label, split, shard file, row) for members that have vectors."""
        with self.connect() as con:
            return list(con.execute(
                "SELECT m.path, m.sha256, m.label, m.split, s.file, v.row FROM members m "
                "JOIN vectors v ON v.fingerprint = ? AND v.sha256 = m.sha256 JOIN shards s ON s.id = v.shard "
                "WHERE m.dataset = ? ORDER BY m.path", (fp_id, dataset)))

    def dataset_locations(self, dataset: str, fp_id: str) -> Iterator[tuple[str | None, str, str, int]]:
        """(label, split, shard file, row) of the members that have vectors, shard by shard and row by row (what
        a streamed read of a table larger than memory walks), fetched lazily."""
        with self.connect() as con:
            yield from con.execute(
                "SELECT m.label, m.split, s.file, v.row FROM members m JOIN vectors v ON v.fingerprint = ? AND "
                "v.sha256 = m.sha256 JOIN shards s ON s.id = v.shard WHERE m.dataset = ? ORDER BY s.id, v.row",
                (fp_id, dataset))

    def coverage_counts(self, dataset: str, fp_id: str, split: str | None = None) -> tuple[int, int]:
        """(usable members, those with a vector under fp_id) of a dataset, or of one split: `coverage` counted by
        SQLite (a page of predictions asks this each time; ~2x faster than building the rows)."""
        with self.connect() as con:
            usable, covered = con.execute(
                f"SELECT COUNT(*), TOTAL({HAS_VECTOR}) FROM members m WHERE m.dataset = ? AND (? IS NULL OR "
                f"m.split = ?) AND {USABLE}", (fp_id, dataset, split, split)).fetchone()
        return int(usable), int(covered)

    def usable_rows(self, dataset: str, fp_id: str, split: str | None = None, offset: int = 0,
                    limit: int | None = None) -> list[tuple]:
        """(path, sha256, label, split, shard file, row) of the usable members with vectors, by path, from `offset`
        (`limit` of them, or all): a page is read by the primary key's order, not by listing the dataset."""
        with self.connect() as con:
            return list(con.execute(
                "SELECT m.path, m.sha256, m.label, m.split, s.file, v.row FROM members m "
                "JOIN vectors v ON v.fingerprint = ? AND v.sha256 = m.sha256 JOIN shards s ON s.id = v.shard "
                f"WHERE m.dataset = ? AND (? IS NULL OR m.split = ?) AND {USABLE} ORDER BY m.path LIMIT ? OFFSET ?",
                (fp_id, dataset, split, split, -1 if limit is None else limit, offset)))
