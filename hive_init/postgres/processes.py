"""Finding and ending the processes that may still hold a data directory or a first boot's
directories: a stale postmaster, backends of a postmaster that was SIGKILLed, an orphaned initdb
or temporary server.

Two rules keep this from being turned against anything else:
- only processes of the user PostgreSQL runs as are ever signalled (`uid`): a path another user
  can change may at worst point us at that user's own processes;
- a directory is matched by its canonical path as the kernel reports it for a descriptor we
  opened without following links (securefs.real_path_of), never by realpath() of a name.

All /proc reading is hive_init/procfs.py's (the project's one /proc reader); what is decided
here is which of those processes are PostgreSQL's and may be signalled.
"""

import os
import signal
import time
from dataclasses import dataclass

import anyio

from hive_init import procfs
from hive_init.runtime.kind import PrepareError


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    state: str
    ppid: int
    pgid: int
    uid: int | None
    comm: str
    cmdline: tuple[str, ...]
    cwd: str | None  # None when we may not look (another user's process, and we are not root)


def proc_info(pid: int) -> ProcInfo | None:
    """None when the process is gone, or its stat, command line or owner is not ours to read."""
    stat = procfs.read_stat(pid)
    args = procfs.cmdline(pid) if stat is not None else None
    uid = procfs.owner(pid) if args is not None else None
    if stat is None or args is None or uid is None:
        return None
    return ProcInfo(pid, stat.state, stat.ppid, stat.pgrp, uid, stat.comm, args, procfs.cwd(pid))


def alive(pid: int) -> bool:
    """Running (a zombie is not: it holds no memory, no files, no shared memory)."""
    return procfs.running(pid)


def _inside(path: str | None, directory: str) -> bool:
    return path is not None and (path == directory or path.startswith(directory.rstrip("/") + "/"))


def is_postgres_of(info: ProcInfo, data_dir: str) -> bool:
    """A postgres process (postmaster or backend) of this data directory (`data_dir`: its
    canonical path): the postmaster and its children run in the data directory; the
    postmaster's own command line names it."""
    looks_like = info.comm.startswith("postgres") or any(os.path.basename(a).startswith("postgres")
                                                         for a in info.cmdline[:1])
    if not looks_like:
        return False
    if info.cwd is not None:
        return info.cwd == data_dir
    args = list(info.cmdline)
    return any(os.path.normpath(a) == data_dir for a in args) or f"-D{data_dir}" in args


def users_of(directory: str, uid: int) -> list[ProcInfo]:
    """Processes of `uid` working in `directory` (a canonical path) or naming it on their
    command line (an initdb or a temporary server orphaned by a first boot that was killed)."""
    me = os.getpid()
    found = []
    for pid in procfs.pids():
        if pid == me:
            continue
        info = proc_info(pid)
        if info is None or info.state in ("Z", "X") or info.uid != uid:
            continue
        if _inside(info.cwd, directory) or any(_inside(os.path.normpath(a), directory) or directory in a
                                               for a in info.cmdline[1:]) or _environ_names(pid, directory):
            found.append(info)
    return found


def _environ_names(pid: int, directory: str) -> bool:
    """An init script of a first boot runs with PGDATA set to the staging directory."""
    environ = procfs.environ(pid)
    return environ is not None and b"PGDATA=" + os.fsencode(directory) in environ


def postgres_of(data_dir: str, uid: int) -> set[int]:
    """Every live postgres process of `uid` working in `data_dir` (canonical). Blocking (a walk of
    /proc): call it in a worker thread."""
    me = os.getpid()
    pids: set[int] = set()
    for pid in procfs.pids():
        info = proc_info(pid)
        if info is None or info.state in ("Z", "X") or pid == me or info.uid != uid:
            continue
        if is_postgres_of(info, data_dir):
            pids.add(pid)
    return pids


async def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Poll (nothing tells us when a process that is not our child ends) with a growing delay;
    returns the PIDs still alive at the timeout."""
    delay = 0.005
    deadline = time.monotonic() + timeout
    while True:
        pids = {p for p in pids if alive(p)}
        if not pids or time.monotonic() >= deadline:
            return pids
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.2)


def signal_pids(pids: set[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


async def kill_users_of(directory: str, uid: int, log) -> None:
    """`directory`: a canonical path (securefs.real_path_of a descriptor we opened)."""
    users = await anyio.to_thread.run_sync(users_of, directory, uid)
    if not users:
        return
    log.warning("ending processes left from an interrupted first boot",
                pids=[u.pid for u in users], directory=directory)
    signal_pids({u.pid for u in users}, signal.SIGKILL)
    left = await wait_gone({u.pid for u in users}, 10.0)
    if left:
        raise PrepareError(f"processes {sorted(left)} still use {directory} after SIGKILL")


async def stop_orphan(info: ProcInfo, data_dir: str, uid: int) -> None:
    """An immediate shutdown (SIGQUIT: the postmaster ends its backends itself and removes its
    shared memory), then SIGKILL for whatever of it is left."""
    signal_pids({info.pid}, signal.SIGQUIT)
    if await wait_gone({info.pid}, 5.0):
        signal_pids({info.pid}, signal.SIGKILL)
        if await wait_gone({info.pid}, 10.0):
            raise PrepareError(f"PostgreSQL server {info.pid} of {data_dir} did not end after SIGKILL")
    await kill_leftovers(data_dir, uid)


async def kill_leftovers(data_dir: str, uid: int) -> None:
    """Processes of a postmaster that is gone. PostgreSQL puts each backend and auxiliary
    process in a session of its own, so they are not in the postmaster's process group; they do
    all work in the data directory. They keep the old shared memory attached, and a new
    postmaster refuses to start while they do. `data_dir`: its canonical path."""
    pids = await anyio.to_thread.run_sync(postgres_of, data_dir, uid)
    if not pids:
        return
    signal_pids(pids, signal.SIGKILL)
    left = await wait_gone(pids, 10.0)
    if left:
        raise PrepareError(f"old PostgreSQL processes {sorted(left)} did not end after SIGKILL")
