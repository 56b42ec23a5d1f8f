"""One writer per archive: an flock on ``<archive>.lock``, which holds the writer's pid. The OS drops the
lock when its holder dies, so a crashed run never blocks the next one, and `writer_pid` tells a reader
whether a run is writing now, whatever the lock file still says."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from poise.discovery.records import ArchiveError


def lock_path(path: Path | str) -> Path:
    return Path(path).with_name(Path(path).name + ".lock")


def writer_pid(path: Path | str) -> int | None:
    """The pid of the process writing the archive at ``path`` now, or None when no process holds its
    writer lock (-1 when one does but its pid is unreadable)."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isascii() and text.isdigit() else -1
    except OSError:  # a filesystem without flock: nobody can be known to hold it
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def take(path: Path) -> tuple[int, bool]:
    """Take the writer lock of the archive at ``path``: (its file descriptor, whether the lock file was
    created now). Raises `ArchiveError` naming the writer's pid when another process holds it."""
    lp = lock_path(path)
    created = not lp.exists()
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # a reader asking who writes (writer_pid) holds a shared lock for an instant: wait that out
        for attempt in range(10):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 9:
                    raise
                time.sleep(0.05)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ArchiveError(f"{path} is being written by another process (pid {holder}); one writer at a "
                           f"time: stop it, or open with Archive(path, readonly=True) to read") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd, created


def release(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
