"""One run per out folder: an flock on OUT/.lock for as long as the run's process lives.

    with hold(out):            # FolderInUse (a ConfigError) names the host and PID holding it
        ...

The kernel releases an flock when its process ends, however it ends (kill -9 too), so a lock
left behind by a process that is gone never blocks: the file may remain, the lock does not. The
file holds who took it (host, PID, start, command), for the message a second run gets.

Network filesystems: Linux's NFS client turns flock into an NFS byte-range lock that every client
sees (NFSv4, or v3 with lockd; not with the `nolock` mount option, where it is local to one
machine). Lustre honours flock across nodes only when mounted with `-o flock` (`localflock`:
one node). A filesystem that refuses locks gets a one-line warning and the run goes on unguarded.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .config import ConfigError
from .paths import command_line

LOCK_NAME = ".lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class FolderInUse(ConfigError):
    """Another live process holds the out folder's lock."""


class LockNotTaken(ConfigError):
    """The lock file could not be made (a full disk, a read-only folder): one line, no traceback."""


def _describe(info: dict) -> str:
    if not info:
        return "another process (it has not yet written who it is)"
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    except (TypeError, ValueError, OverflowError, OSError):     # a lock file is not trusted
        since = "?"
    return (f"PID {info.get('pid')} on host {info.get('host')} (since {since}: "
            f"{info.get('command', '?')})")


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _lock(path: Path) -> int | None:
    """An fd holding the lock on `path`; None where the filesystem has no locks."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise LockNotTaken(f"cannot make the lock file {path}: {e.strerror or e}. Free space or fix the "
                               f"folder, or choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise FolderInUse(f"out folder {path.parent} is in use by {_describe(holder)}. Wait for that run "
                              f"to end or stop it (the lock goes with its process), or choose another --out") from None
        except OSError as e:
            os.close(fd)
            if e.errno in _UNSUPPORTED:
                print(f"warning: {path.parent} does not support file locks ({e.strerror}); nothing stops a "
                      f"second run from using this folder at the same time", file=sys.stderr, flush=True)
                return None
            raise
        # A holder that just ended unlinks the file; if ours was unlinked between open and flock,
        # a third process may lock a new file at the path: try again on that one.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def hold(out: str | Path):
    """Hold OUT's lock for the block. Folders this made are removed again if the run left them empty
    (a run that fails before writing anything leaves nothing behind)."""
    out = Path(out)
    created = [p for p in (out, *out.parents) if not p.exists()]     # innermost first
    path = out / LOCK_NAME
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LockNotTaken(f"cannot make out folder {out}: {e.strerror or e}. Free space or fix the folder, "
                               f"or choose another --out") from None
        try:
            fd = _lock(path)
        except OSError as e:          # flock itself failed (not "unsupported", not "held")
            raise LockNotTaken(f"cannot lock {path}: {e.strerror or e}; choose another --out") from None
    except ConfigError:
        _remove_empty(created)
        raise
    try:
        if fd is not None:
            info = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                    "command": command_line()}
            # Who holds it is only for another run's message: a full disk here does not stop this run
            # (the lock itself is held), the run's own first write then says what is wrong.
            with _ignore_os_errors():
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        if fd is not None:
            with _ignore_os_errors():
                path.unlink()      # while still locked: nobody can take a lock on the old file after
            os.close(fd)
        _remove_empty(created)


def _remove_empty(created: list[Path]) -> None:
    """The folders `hold` made, innermost first, if they are empty: stops at the first that is not."""
    with _ignore_os_errors():
        for folder in created:
            folder.rmdir()


def holder(out: str | Path) -> dict | None:
    """Who holds OUT's lock now ({} if unknown), or None if nobody does. Takes no lock it keeps."""
    path = Path(out) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def describe_holder(info: dict) -> str:
    return _describe(info)


@contextmanager
def _ignore_os_errors():
    try:
        yield
    except OSError:
        pass
