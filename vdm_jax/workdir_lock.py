"""One job per output directory: a lock file holding the host, pid and start time of its owner.

Training locks ``WORKDIR/train.lock``; the evaluation job locks ``WORKDIR/eval/eval.lock`` (its own
outputs only: it reads checkpoints without any lock, so it never blocks training). The lock is
taken with ``O_CREAT | O_EXCL`` and removed on exit. A lock left by a process that died (same host,
pid no longer running) is stale and is taken over with a warning; a lock held by a live process,
or by another host (whose processes cannot be checked from here), is refused unless ``force``
(the ``--force_unlock`` flag of the launchers).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import sys

TRAIN_LOCK = "train.lock"
EVAL_LOCK = "eval.lock"

log = logging.getLogger(__name__)


class WorkdirLockedError(RuntimeError):
    """The directory is locked by another job (one-line message naming it and the lock file)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_holder(path: str) -> dict | None:
    """The lock file's content (host, pid, started, command), or None if missing or unreadable."""
    try:
        with open(path) as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


class WorkdirLock:
    """``with WorkdirLock(directory, TRAIN_LOCK, force=...):`` holds ``directory/name``."""

    def __init__(self, directory: str, name: str = TRAIN_LOCK, *, force: bool = False,
                 flag: str = "--force_unlock"):
        self.path = os.path.join(os.path.abspath(directory), name)
        self.force, self.flag = force, flag
        self.record: dict | None = None

    def acquire(self) -> WorkdirLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv)[:1000]}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_or_refuse(read_holder(self.path))
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            self.record = record
            return self
        raise WorkdirLockedError(f"could not take the lock {self.path}: another job keeps taking it")

    def _take_over_or_refuse(self, holder: dict | None) -> None:
        who = (f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')}"
               if holder else "an unknown job (unreadable lock file)")
        if self.force:
            log.warning("%s: removing the lock of %s (forced)", self.path, who)
        elif holder and holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                and not _alive(holder["pid"]):
            log.warning("%s: stale lock of %s (no such process): taking it over", self.path, who)
        else:
            raise WorkdirLockedError(
                f"{os.path.dirname(self.path)} is in use by {who} (lock file {self.path}); wait for it "
                f"to finish, or if that job is gone, rerun with {self.flag}")
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        """Remove the lock file if it is still this job's (a forced takeover leaves the new one)."""
        if self.record is not None and read_holder(self.path) == self.record:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self.record = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
