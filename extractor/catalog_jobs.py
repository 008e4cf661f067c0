"""The catalog's jobs table: states move only forward, every unfinished job is found again after a restart."""

from __future__ import annotations

import json
import time

ACTIVE = ("queued", "running", "cancelling")
FINAL = ("succeeded", "failed", "cancelled")
JOB_FIELDS = ("id", "kind", "key", "state", "request", "progress", "result", "error", "created", "updated")


class JobTable:
    """Mixed into Catalog (which provides `connect`)."""

    JOB_FIELDS = JOB_FIELDS

    def create_job(self, job_id: str, kind: str, key: str, request: str) -> None:
        now = time.time()
        with self.connect() as con, con:
            con.execute("INSERT INTO jobs VALUES (?, ?, ?, 'queued', ?, NULL, NULL, NULL, ?, ?)",
                        (job_id, kind, key, request, now, now))

    def transition_job(self, job_id: str, to: str, from_states: tuple[str, ...], **fields: str | None) -> bool:
        """Move a job to `to` only from one of `from_states` (so that no late writer moves it back); True
        when it moved. `fields` (result, error, progress) are written in the same statement."""
        names = [k for k in fields if k in JOB_FIELDS and k not in ("id", "state", "created", "updated")]
        sets = "".join(f", {k} = ?" for k in names)
        marks = ",".join("?" * len(from_states))
        with self.connect() as con, con:
            cur = con.execute(f"UPDATE jobs SET state = ?{sets}, updated = ? WHERE id = ? AND state IN ({marks})",
                              (to, *[fields[k] for k in names], time.time(), job_id, *from_states))
        return cur.rowcount == 1

    def finish_job(self, job_id: str, state: str, from_states: tuple[str, ...] = ("running", "cancelling"),
                   result: dict | None = None, error: str | None = None, progress: dict | None = None) -> bool:
        fields = {"error": error, **({"result": json.dumps(result)} if result is not None else {}),
                  **({"progress": json.dumps(progress)} if progress is not None else {})}
        return self.transition_job(job_id, state, from_states, **fields)

    def update_job(self, job_id: str, **fields: str | None) -> None:
        """Write fields other than the state (progress) of a job."""
        names = [k for k in fields if k in JOB_FIELDS and k not in ("id", "state")]
        with self.connect() as con, con:
            con.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in names)}, updated = ? WHERE id = ?",
                        (*[fields[k] for k in names], time.time(), job_id))

    def job(self, job_id: str) -> dict | None:
        with self.connect() as con:
            row = con.execute(f"SELECT {', '.join(JOB_FIELDS)} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else dict(zip(JOB_FIELDS, row, strict=True))

    def jobs(self, states: tuple[str, ...] | None = None, limit: int | None = None, offset: int = 0,
             oldest_first: bool = False) -> list[dict]:
        """Jobs newest first (or oldest first), optionally of some states; `limit`/`offset` page them."""
        where = f"WHERE state IN ({','.join('?' * len(states))})" if states else ""
        order = "ASC" if oldest_first else "DESC"
        with self.connect() as con:
            rows = con.execute(f"SELECT {', '.join(JOB_FIELDS)} FROM jobs {where} ORDER BY created {order}, id {order} "
                               f"LIMIT ? OFFSET ?", (*(states or ()), -1 if limit is None else limit, offset))
            return [dict(zip(JOB_FIELDS, r, strict=True)) for r in rows]

    def count_jobs(self, states: tuple[str, ...] | None = None) -> int:
        where = f"WHERE state IN ({','.join('?' * len(states))})" if states else ""
        with self.connect() as con:
            return con.execute(f"SELECT COUNT(*) FROM jobs {where}", states or ()).fetchone()[0]

    def active_job(self, key: str) -> str | None:
        """A queued or running job for the same work (a job being cancelled does not count)."""
        with self.connect() as con:
            row = con.execute("SELECT id FROM jobs WHERE key = ? AND state IN ('queued', 'running')", (key,)).fetchone()
        return row[0] if row else None

    def recover_jobs(self, resume_interrupted: bool) -> list[str]:
        """After a restart: running jobs were interrupted, jobs being cancelled are cancelled. Returns every job
        to run, oldest first: all queued ones, and the interrupted ones when they resume."""
        with self.connect() as con, con:
            now = time.time()
            con.execute("UPDATE jobs SET state = 'cancelled', updated = ? WHERE state = 'cancelling'", (now,))
            con.execute("UPDATE jobs SET state = 'interrupted', updated = ? WHERE state = 'running'", (now,))
            if resume_interrupted:
                con.execute("UPDATE jobs SET state = 'queued', error = NULL, updated = ? WHERE state = 'interrupted'",
                            (now,))
            return [r[0] for r in con.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created, id")]

    def prune_jobs(self, older_than: float) -> int:
        """Delete finished jobs last changed before `older_than` (a time); how many."""
        with self.connect() as con, con:
            return con.execute(f"DELETE FROM jobs WHERE state IN ({','.join('?' * len(FINAL))}) AND updated < ?",
                               (*FINAL, older_than)).rowcount
