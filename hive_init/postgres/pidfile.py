"""postmaster.pid: the file the `postgres` user writes in the data directory, read by root.

It is read as a file someone else controls: reached by descriptor without following a link,
only if it is a regular file (a FIFO would block the reader until someone writes to it, a link
to /dev/zero would never end), at most `LIMIT` bytes, and in a worker thread.
"""

import errno
import os
from dataclasses import dataclass

import anyio

from hive_init import securefs
from hive_init.postgres import processes
from hive_init.runtime.kind import PrepareError

NAME = "postmaster.pid"
LIMIT = 4096  # PostgreSQL writes 8 short lines; anything much longer is not its file


@dataclass(frozen=True)
class PidFile:
    state: str  # "missing", "unusable" (not a regular file, a link, too long), "read"
    lines: tuple[str, ...] = ()
    reason: str = ""

    @property
    def pid(self) -> int:
        try:
            return abs(int(self.lines[0].strip())) if self.lines else 0
        except ValueError:
            return 0


def read(data_dir: str) -> PidFile:
    """Blocking: call it in a worker thread (read_async) unless it is known to be cheap."""
    try:
        data = securefs.read_bounded(os.path.join(data_dir, NAME), LIMIT)
    except FileNotFoundError:
        return PidFile("missing")
    except securefs.UnsafePath as e:
        return PidFile("unusable", reason=e.strerror or "unsafe path")
    except OSError as e:
        if e.errno == errno.ELOOP:
            return PidFile("unusable", reason="a symbolic link")
        if e.errno == errno.EFBIG:
            return PidFile("unusable", reason=f"longer than {LIMIT} bytes")
        raise
    return PidFile("read", tuple(data.decode("utf-8", "replace").splitlines()))


async def read_async(data_dir: str) -> PidFile:
    return await anyio.to_thread.run_sync(read, data_dir)


def status(data_dir: str, pid: int) -> str | None:
    """The status the postmaster writes in postmaster.pid ("starting", "ready", "stopping",
    "standby"), if that file is this postmaster's; None while it is not (yet)."""
    try:
        found = read(data_dir)
    except OSError:
        return "unknown"  # not ours to read: find out by connecting
    if found.state != "read" or not found.lines or found.lines[0].strip() != str(pid):
        return None
    return found.lines[7].strip() if len(found.lines) >= 8 else "starting"


def _unlink(data_dir: str) -> None:
    """By the directory's descriptor: unlink never follows a link, it removes the name."""
    fd = securefs.open_directory(data_dir)
    try:
        os.unlink(NAME, dir_fd=fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


async def clear(data_dir: str, canonical: str, uid: int, log) -> None:
    """Before a start: a postmaster.pid whose PID is a live postgres (of `uid`) of this data
    directory is a server we no longer own (an orphan of an earlier hive-init): end it and its
    backends, and wait. A PID that is dead or belongs to something else (in a fresh PID
    namespace it may even be hive-init itself) makes the file stale: remove it, or PostgreSQL
    refuses to start. So is a file that is not a regular one. `canonical`: data_dir's canonical
    path (the one the kernel shows as a process's cwd)."""
    path = os.path.join(data_dir, NAME)
    try:
        found = await read_async(data_dir)
    except OSError as e:
        raise PrepareError(f"cannot read {path}: {e.strerror}") from None
    if found.state == "missing":
        return
    if found.state == "unusable":
        log.warning(f"removing {NAME}: {found.reason}, not the file PostgreSQL writes")
        await anyio.to_thread.run_sync(_unlink, data_dir)
        return
    pid = found.pid
    info = processes.proc_info(pid) if pid > 0 else None
    ours = info is not None and info.uid == uid and info.state not in ("Z", "X") and pid != os.getpid()
    if ours and info is not None and processes.is_postgres_of(info, canonical):
        log.warning("a PostgreSQL server from an earlier run still holds the data directory: stopping it",
                    pid=pid)
        await processes.stop_orphan(info, canonical, uid)
        await anyio.to_thread.run_sync(_unlink, data_dir)  # an immediate shutdown removes it; a SIGKILL does not
        return
    reason = "is not running" if info is None or info.state in ("Z", "X") else \
        "is this process" if pid == os.getpid() else f"is an unrelated process ({info.comm})"
    log.info(f"removing stale {NAME} (PID {pid} {reason})")
    try:
        await anyio.to_thread.run_sync(_unlink, data_dir)
    except OSError as e:
        raise PrepareError(f"cannot remove stale {path}: {e.strerror}") from None
