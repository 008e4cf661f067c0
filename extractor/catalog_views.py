"""The catalog's views table: augmented views of images, keyed by (fingerprint, recipe, content hash, view index)."""

from __future__ import annotations

from collections import defaultdict


class ViewTable:
    """Mixed into Catalog (which provides `connect`)."""

    def _split_members(self, dataset: str, split: str | None) -> tuple[str, tuple]:
        if split is None:
            return "SELECT DISTINCT sha256 FROM members WHERE dataset = ?", (dataset,)
        return "SELECT DISTINCT sha256 FROM members WHERE dataset = ? AND split = ?", (dataset, split)

    def missing_views(self, dataset: str, fp_id: str, recipe: str, count: int,
                      split: str | None = "train") -> dict[str, list[int]]:
        """Per content hash of the split's members: the view indices below `count` not in the cache."""
        members, args = self._split_members(dataset, split)
        have: dict[str, set[int]] = defaultdict(set)
        with self.connect() as con:
            shas = [r[0] for r in con.execute(members, args)]
            rows = con.execute(f"SELECT w.sha256, w.view FROM ({members}) m JOIN views w ON w.fingerprint = ? AND "
                               f"w.recipe = ? AND w.sha256 = m.sha256 AND w.view < ?", (*args, fp_id, recipe, count))
            for sha, index in rows:
                have[sha].add(index)
        wanted = set(range(count))
        return {sha: sorted(wanted - have[sha]) for sha in shas if len(have[sha]) < count}

    def count_views(self, dataset: str, fp_id: str, recipe: str, count: int, split: str | None = "train") -> int:
        """Views below `count` in the cache for the split's images."""
        members, args = self._split_members(dataset, split)
        with self.connect() as con:
            return con.execute(f"SELECT COUNT(*) FROM ({members}) m JOIN views w ON w.fingerprint = ? AND w.recipe = ? "
                               f"AND w.sha256 = m.sha256 AND w.view < ?", (*args, fp_id, recipe, count)).fetchone()[0]

    def view_rows(self, dataset: str, fp_id: str, recipe: str, count: int,
                  split: str | None = "train") -> list[tuple[str, int, str, int]]:
        """(sha256, view, shard file, row) of the split's views below `count`, by content hash then view."""
        members, args = self._split_members(dataset, split)
        with self.connect() as con:
            return list(con.execute(
                f"SELECT w.sha256, w.view, s.file, w.row FROM ({members}) m JOIN views w ON w.fingerprint = ? AND "
                f"w.recipe = ? AND w.sha256 = m.sha256 AND w.view < ? JOIN shards s ON s.id = w.shard "
                f"ORDER BY w.sha256, w.view", (*args, fp_id, recipe, count)))

    def view_summary(self, dataset: str) -> list[dict]:
        """Per fingerprint and recipe: train images with views, and the fewest and most views an image has."""
        members, args = self._split_members(dataset, "train")
        with self.connect() as con:
            rows = con.execute(f"SELECT w.fingerprint, w.recipe, w.sha256, COUNT(*) FROM ({members}) m JOIN views w "
                               f"ON w.sha256 = m.sha256 GROUP BY w.fingerprint, w.recipe, w.sha256", args).fetchall()
            train = con.execute(f"SELECT COUNT(*) FROM ({members})", args).fetchone()[0]
        per: dict[tuple[str, str], list[int]] = defaultdict(list)
        for fp, recipe, _, n in rows:
            per[(fp, recipe)].append(n)
        return [{"fingerprint": fp, "recipe": recipe, "train_images": train, "images": len(counts),
                 "complete": min(counts) if len(counts) == train else 0, "rows": sum(counts)}
                for (fp, recipe), counts in sorted(per.items())]
