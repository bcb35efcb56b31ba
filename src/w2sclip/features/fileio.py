"""Atomic file writes, advisory file locks and disk-full errors for the caches and run folders.

Every file is written under a temporary name in its own folder, flushed, fsync'ed and then
``os.replace``d into place, so a reader sees either the old file or the complete new one, and a
killed writer leaves only a ``.tmp`` file behind. Locks are ``fcntl.flock`` locks on small
``*.lock`` files: the kernel releases them when the holding process dies, so there are no stale
locks to clean up after a crash (on NFS v4 flock is emulated with POSIX locks and still works;
Lustre needs the ``flock`` mount option). A full disk (ENOSPC, EDQUOT) is a ``DiskFullError``
naming the folder and the fix, and leaves no partial file under the final name.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""errno values that mean the disk (or the user's quota) is full."""


class DiskFullError(OSError):
    """No space left while writing a file; the message says where, and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free"
    except OSError:
        return "free space unknown"


@contextmanager
def disk_full_hint(path: Path, move: str = "--cache-dir or W2SCLIP_CACHE") -> Iterator[None]:
    """Turn ENOSPC/EDQUOT raised inside the block into a ``DiskFullError`` naming ``path``'s
    folder, the free space left there and the fix (``move``: how to point the output elsewhere)."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        path = Path(path)
        raise DiskFullError(e.errno, f"disk full: no space left on the device holding {path.parent} "
                                     f"({_free(path.parent)}) while writing {path.name}; free some "
                                     f"space there or point {move} to a disk with room, then rerun: "
                                     f"finished work is kept and only what is missing is computed") from e


def tmp_name(path: Path) -> Path:
    """A unique temporary name beside ``path`` (``.<name>.<pid>.<rand>.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[object], None], exclusive: bool = False,
                 move: str = "--cache-dir or W2SCLIP_CACHE") -> bool:
    """Write ``path`` through ``write(fileobj)`` atomically.

    With ``exclusive`` the file is only created when absent (``os.link``: first writer wins) and
    the return value says whether this call created it; otherwise it replaces any old file.
    A full disk is a ``DiskFullError`` (see ``disk_full_hint``; ``move`` names the fix).
    """
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with disk_full_hint(path, move):
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            if exclusive:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, path)
        fsync_dir(path.parent)
        return True
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_json(path: Path, obj, exclusive: bool = False, move: str = "--cache-dir or W2SCLIP_CACHE") -> bool:
    """``atomic_write`` of indented JSON."""
    data = json.dumps(obj, indent=1, sort_keys=True, default=str).encode()
    return atomic_write(path, lambda f: f.write(data), exclusive=exclusive, move=move)


class FileLock:
    """An exclusive ``fcntl.flock`` lock on ``path`` (created when absent).

    ``try_acquire()`` never blocks; ``acquire()`` waits. Release explicitly (or use ``with``):
    ``LOCK_UN`` also frees the lock when a forked DataLoader worker inherited the descriptor.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _lock(self, flags: int) -> bool:
        import fcntl

        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def try_acquire(self) -> bool:
        """Take the lock if free; False when another process holds it."""
        import fcntl

        return self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB)

    def acquire(self) -> None:
        """Take the lock, waiting for its holder to release it (or to die)."""
        import fcntl

        self._lock(fcntl.LOCK_EX)

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> FileLock:  # noqa: PYI034 (Self needs Python 3.11)
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
