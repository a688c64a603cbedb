"""Small file-system helpers shared by every stage: atomic writes, a run's JSON files read
with one clear message when damaged, and advisory locks (private ones for shared places)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from autoshuikou.errors import UserError

REWRITE_HOW = "restore it, or delete it and rerun the search to write it again"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it over: readers never see half.

    A failed write (a full disk) names ``path`` in its OSError, which a write alone does not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path, how: str = REWRITE_HOW) -> Any:
    """The JSON in ``path``; a damaged file (cut short, not JSON) is one UserError naming it.

    A missing file still raises FileNotFoundError: callers test for it."""
    data = path.read_bytes()
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        what = "empty" if not data.strip() else f"not valid JSON at line {exc.lineno} ({exc.msg})"
        raise UserError(f"{path} is damaged: {what}", how) from exc
    except ValueError as exc:  # bytes that are not UTF-8 text
        raise UserError(f"{path} is damaged: not JSON text ({exc})", how) from exc


def drop_torn_tail(path: Path) -> int:
    """Cut a half-written last line off the append-only log ``path``; the bytes cut.

    A writer killed mid-write, or stopped by a full disk, leaves a last line without its
    newline. Optuna's journal reader skips it, but the next append glues a whole line onto
    it, and from then on every read of the journal fails. Call it holding the log's write
    lock: a write in progress looks the same."""
    try:
        handle = open(path, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return 0
    with handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        end = size
        while end > 0:  # back to the last newline, a block at a time
            start = max(0, end - 65536)
            handle.seek(start)
            newline = handle.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        handle.truncate(end)
        handle.flush()
        os.fsync(handle.fileno())
        return size - end


def require(
    record: Any, keys: Iterable[str], path: Path, how: str = REWRITE_HOW, within: str = ""
) -> dict[str, Any]:
    """``record`` (read from ``path``) if it is an object with every key of ``keys``
    (``a.b``: key ``b`` of the object at ``a``); else one UserError naming the file and the
    first key missing, as an older or partly written file lacks them."""
    if not isinstance(record, dict):
        raise UserError(f"{path} is damaged: {within or 'its top level'} is not a JSON object", how)
    for key in keys:
        value: Any = record
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise UserError(
                    f"{path} lacks {within + '.' if within else ''}{key}: it was cut short or "
                    "written by an older autoshuikou",
                    how,
                )
            value = value[part]
    return record


def _private_folder(folder: Path, how: str) -> None:
    with suppress(FileExistsError):  # a link there too: lstat below refuses it
        folder.mkdir(mode=0o700, parents=True)
    info = folder.lstat()
    problem = (
        "is a symbolic link"
        if stat.S_ISLNK(info.st_mode)
        else "is not a folder"
        if not stat.S_ISDIR(info.st_mode)
        else f"belongs to another user (uid {info.st_uid})"
        if info.st_uid != os.getuid()
        else "can be written by other users"
        if info.st_mode & 0o022
        else ""
    )
    if problem:
        raise UserError(f"the lock folder {folder} {problem}: refusing to use it", how)


def _open_lock(path: Path, how: str | None = None) -> int:
    """The lock file's descriptor, opened without following a link at ``path``. With
    ``how`` (what to do about a folder that fails the checks) the lock is private: its
    folder the user's own and no one else's to write (created 0700), the file 0600."""
    if how is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        _private_folder(path.parent, how)
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666 if how is None else 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise UserError(
            f"the lock file {path} is a symbolic link: refusing to follow it",
            how or "delete the link (a lock file is an empty file that autoshuikou creates)",
        ) from exc
    if how is not None and os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)  # created by an older autoshuikou
    return fd


@contextmanager
def file_lock(path: Path, shared: bool = False, private: str | None = None) -> Iterator[None]:
    """An advisory lock held while the block runs (released if the process dies).

    Exclusive by default; ``shared`` holders exclude exclusive ones but not each other.
    A link planted at ``path`` is refused, not followed. ``private`` (how to fix a folder
    that fails the checks) makes it a lock only this user can create: for places other
    users reach, such as the temporary folder.
    """
    fd = _open_lock(path, private)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class FileLock:
    """An exclusive advisory file lock with explicit acquire/release (idempotent release)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = _open_lock(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
