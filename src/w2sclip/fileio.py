"""Atomic file writes, advisory file locks, disk-full errors, file hashes and the cache location (general I/O).

Every file is written under a temporary name in its own folder, flushed, fsync'ed and then
``os.replace``d into place, so a reader sees either the old file or the complete new one, and a
killed writer leaves only a ``.tmp`` file behind. Locks are ``fcntl.flock`` locks on small
``*.lock`` files: the kernel releases them when the holding process dies, so there are no stale
locks to clean up after a crash (on NFS v4 flock is emulated with POSIX locks and still works;
Lustre needs the ``flock`` mount option). A full disk (ENOSPC, EDQUOT) is a ``DiskFullError``
naming the folder and the fix, and leaves no partial file under the final name; a folder that
cannot be written (read-only file system, no permission, a file where a folder should be) is a
``NotWritableError`` naming it and the fix. A lock on a read-only folder falls back to a lock
file in the temporary folder, so a complete read-only cache can still be read.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""errno values that mean the disk (or the user's quota) is full."""
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
"""errno values that mean a folder cannot be written (permissions, read-only file system)."""
NOT_A_FOLDER = (errno.ENOTDIR, errno.EEXIST)
"""errno values of a file standing where a folder is needed."""


class DiskFullError(OSError):
    """No space left while writing a file; the message says where, and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


class NotWritableError(OSError):
    """A folder cannot be written (read-only, no permission, or a file); the message says which
    and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def folder_problem(path: str | os.PathLike) -> str | None:
    """Why files cannot be created in the folder ``path`` (created when absent), or None:
    ``"X is a file, not a folder"``, ``"X is on a read-only file system"``, ``"no permission to
    write in X"``."""
    path = Path(path)
    here = _existing_ancestor(path)
    if not here.is_dir():
        return f"{here} is a file, not a folder"
    if not os.access(here, os.W_OK | os.X_OK):
        return (f"{here} is on a read-only file system" if _read_only_fs(here)
                else f"no permission to write in {here}")
    return None


def check_writable(path: str | os.PathLike, what: str, instead: str) -> None:
    """Raise ``NotWritableError`` when the folder ``path`` could not be created or written, before
    any long work starts: ``"<what> <path> cannot be written: <problem>; [make it writable or] <instead>"``."""
    problem = folder_problem(path)
    if problem:
        fix = instead if problem.endswith("is a file, not a folder") else f"make it writable or {instead}"
        raise NotWritableError(errno.EACCES, f"{what} {path} cannot be written: {problem}; {fix}")


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free"
    except OSError:
        return "free space unknown"


@contextmanager
def disk_full_hint(path: Path, move: str = "--cache-dir or W2SCLIP_CACHE") -> Iterator[None]:
    """Turn ENOSPC/EDQUOT raised inside the block into a ``DiskFullError`` naming ``path``'s
    folder, the free space left there and the fix (``move``: how to point the output elsewhere);
    a folder that cannot be written (EACCES, EPERM, EROFS, a file in the way) becomes a
    ``NotWritableError`` naming it and the same fix."""
    try:
        yield
    except (DiskFullError, NotWritableError):
        raise
    except OSError as e:
        path = Path(path)
        problem = folder_problem(path.parent) if e.errno in NOT_WRITABLE + NOT_A_FOLDER else None
        if e.errno in NOT_WRITABLE or problem:
            problem = problem or f"{e.strerror} ({e.filename or path.parent})"
            raise NotWritableError(e.errno, f"cannot write {path.name} into {path.parent}: {problem}; make "
                                            f"it writable or point {move} to a writable folder") from e
        if e.errno not in DISK_FULL:
            raise
        raise DiskFullError(e.errno, f"disk full: no space left on the device holding {path.parent} "
                                     f"({_free(path.parent)}) while writing {path.name}; free some "
                                     f"space there or point {move} to a disk with room, then rerun: "
                                     f"finished work is kept and only what is missing is computed") from e


def read_only_cache_error(entry: Path, what: str, e: OSError | None = None) -> NotWritableError:
    """The error for a cache ``entry`` that is missing (or unfinished) in a cache that cannot be
    written: a read-only cache serves complete entries only."""
    entry = Path(entry)
    problem = folder_problem(entry) or folder_problem(entry.parent) or str(e)
    if problem.endswith("is a file, not a folder"):
        return NotWritableError(errno.ENOTDIR, f"{what} {entry} cannot be created: {problem}; point "
                                               f"--cache-dir, W2SCLIP_CACHE or cache_dir= to a folder")
    return NotWritableError(e.errno if e is not None else errno.EACCES,
                            f"{what} {entry} is missing or unfinished and the cache cannot be written "
                            f"({problem}); a read-only cache serves only the entries it holds: point "
                            f"--cache-dir, W2SCLIP_CACHE or cache_dir= to a writable folder")


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
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    with open(path, "rb") as f:
        if hasattr(hashlib, "file_digest"):
            return hashlib.file_digest(f, "sha256").hexdigest()
        h = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        return h.hexdigest()


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

    def _lock(self, block: bool) -> bool:
        import fcntl

        if self._fd is not None:
            return True
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def _open(self) -> int:
        """A descriptor of the lock file. In a folder this process cannot write (a shared
        read-only cache) the file is opened read-only when it exists (``flock`` needs no write
        access), else a lock file of the same name in the temporary folder stands in for it."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            if e.errno not in NOT_WRITABLE:
                raise
        with suppress(OSError):
            return os.open(self.path, os.O_RDONLY)
        import tempfile

        where = Path(tempfile.gettempdir()) / f"w2sclip-locks-{os.getuid()}"
        where.mkdir(mode=0o700, exist_ok=True)
        name = hashlib.sha256(os.path.abspath(self.path).encode()).hexdigest()[:32]
        return os.open(where / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def try_acquire(self) -> bool:
        """Take the lock if free; False when another process holds it."""
        return self._lock(block=False)

    def acquire(self) -> None:
        """Take the lock, waiting for its holder to release it (or to die)."""
        self._lock(block=True)

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __del__(self) -> None:
        try:
            self.release()
        except ImportError:  # interpreter shutdown: closing the descriptor frees the lock anyway
            pass

    def __enter__(self) -> FileLock:  # noqa: PYI034 (Self needs Python 3.11)
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def default_cache_dir(path: str | os.PathLike | None = None) -> Path:
    """``path`` (``~`` expanded) or else ``$W2SCLIP_CACHE`` or ``~/.cache/w2sclip``: generated
    data, features, weak predictions, finished runs."""
    return Path(path or os.environ.get("W2SCLIP_CACHE") or Path.home() / ".cache" / "w2sclip").expanduser()
