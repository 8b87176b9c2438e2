"""The data directory on disk: what state it is in, building a new one so that a first boot
killed at any moment leaves nothing or a complete cluster, ownership, and the processes that may
still hold it (a stale postmaster.pid, backends of a postmaster that was SIGKILLed).

Layout of a first boot:
- data_dir missing: the cluster is built in a sibling `<data_dir>.initdb-<random>` (same
  filesystem), the marker is written in it, and it is renamed into place: one atomic step.
- data_dir empty (a mount point): the cluster is built in `<data_dir>/.hive-init-initdb-<random>`
  (same filesystem as the target), the marker is written in it, then its entries are moved up one
  by one, the marker last. A staging directory that holds the marker is complete: a boot that
  finds one finishes the move (rolls forward). One without it is removed.
"""

import json
import os
import secrets
import shutil
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

import anyio

from hive_init.config.model import RunAs
from hive_init.runtime.kind import PrepareError

MARKER = "hive-init-initdb.done"
SIBLING_INFIX = ".initdb-"
INNER_PREFIX = ".hive-init-initdb-"
IGNORED_ENTRIES = {"lost+found"}  # the root of an ext4 volume


# ---- processes ----------------------------------------------------------------------------------

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
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = tuple(a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a)
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:  # gone, or not ours to look at
        return None
    comm = raw[raw.find("(") + 1: raw.rfind(")")]
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        cwd: str | None = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = None
    return ProcInfo(pid, fields[0], int(fields[1]), int(fields[2]), uid, comm, cmdline, cwd)


def all_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def alive(pid: int) -> bool:
    """Running (a zombie is not: it holds no memory, no files, no shared memory)."""
    info = proc_info(pid)
    return info is not None and info.state not in ("Z", "X")


def _inside(path: str | None, directory: str) -> bool:
    return path is not None and (path == directory or path.startswith(directory.rstrip("/") + "/"))


def is_postgres_of(info: ProcInfo, data_dir: str) -> bool:
    """A postgres process (postmaster or backend) of this data directory: the postmaster and its
    children run in the data directory; the postmaster's own command line names it."""
    data_dir = os.path.realpath(data_dir)
    looks_like = info.comm.startswith("postgres") or any(os.path.basename(a).startswith("postgres")
                                                         for a in info.cmdline[:1])
    if not looks_like:
        return False
    if info.cwd is not None:
        return os.path.realpath(info.cwd) == data_dir
    args = list(info.cmdline)
    return any(os.path.normpath(a) == data_dir for a in args) or f"-D{data_dir}" in args


def users_of(directory: str) -> list[ProcInfo]:
    """Processes working in `directory` or naming it on their command line (an initdb or a
    temporary server orphaned by a first boot that was killed)."""
    directory = os.path.realpath(directory)
    me = os.getpid()
    found = []
    for pid in all_pids():
        if pid == me:
            continue
        info = proc_info(pid)
        if info is None or info.state in ("Z", "X"):
            continue
        if _inside(info.cwd, directory) or any(_inside(os.path.normpath(a), directory) or directory in a
                                               for a in info.cmdline[1:]) or _environ_names(pid, directory):
            found.append(info)
    return found


def _environ_names(pid: int, directory: str) -> bool:
    """An init script of a first boot runs with PGDATA set to the staging directory."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
    except OSError:
        return False
    return b"PGDATA=" + os.fsencode(directory) in environ


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


async def kill_users_of(directory: str, log) -> None:
    users = users_of(directory)
    if not users:
        return
    log.warning("ending processes left from an interrupted first boot",
                pids=[u.pid for u in users], directory=directory)
    signal_pids({u.pid for u in users}, signal.SIGKILL)
    left = await wait_gone({u.pid for u in users}, 10.0)
    if left:
        raise PrepareError(f"processes {sorted(left)} still use {directory} after SIGKILL")


# ---- postmaster.pid -----------------------------------------------------------------------------

async def clear_postmaster_pid(data_dir: str, log) -> None:
    """Before a start: a postmaster.pid whose PID is a live postgres of this data directory is a
    server we no longer own (an orphan of an earlier hive-init): end it and its backends, and
    wait. A PID that is dead or belongs to something else (in a fresh PID namespace it may even
    be hive-init itself) makes the file stale: remove it, or PostgreSQL refuses to start."""
    path = os.path.join(data_dir, "postmaster.pid")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
    except FileNotFoundError:
        return
    except OSError as e:
        raise PrepareError(f"cannot read {path}: {e.strerror}") from None
    try:
        pid = abs(int(first))
    except ValueError:
        pid = 0
    info = proc_info(pid) if pid > 0 else None
    if info is not None and info.state not in ("Z", "X") and pid != os.getpid() and is_postgres_of(info, data_dir):
        log.warning("a PostgreSQL server from an earlier run still holds the data directory: stopping it",
                    pid=pid)
        await stop_orphan(info, data_dir)
        try:
            os.unlink(path)  # an immediate shutdown removes it itself; a SIGKILL does not
        except FileNotFoundError:
            pass
        return
    reason = "is not running" if info is None or info.state in ("Z", "X") else \
        "is this process" if pid == os.getpid() else f"is an unrelated process ({info.comm})"
    log.info(f"removing stale postmaster.pid (PID {pid} {reason})")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise PrepareError(f"cannot remove stale {path}: {e.strerror}") from None


async def stop_orphan(info: ProcInfo, data_dir: str) -> None:
    """An immediate shutdown (SIGQUIT: the postmaster ends its backends itself and removes its
    shared memory), then SIGKILL for whatever of it is left."""
    signal_pids({info.pid}, signal.SIGQUIT)
    if await wait_gone({info.pid}, 5.0):
        signal_pids({info.pid}, signal.SIGKILL)
        if await wait_gone({info.pid}, 10.0):
            raise PrepareError(f"PostgreSQL server {info.pid} of {data_dir} did not end after SIGKILL")
    await kill_leftovers(data_dir)


async def kill_leftovers(data_dir: str) -> None:
    """Processes of a postmaster that is gone. PostgreSQL puts each backend and auxiliary
    process in a session of its own, so they are not in the postmaster's process group; they do
    all work in the data directory. They keep the old shared memory attached, and a new
    postmaster refuses to start while they do."""
    pids: set[int] = set()
    for pid in all_pids():
        info = proc_info(pid)
        if info is None or info.state in ("Z", "X") or pid == os.getpid():
            continue
        if is_postgres_of(info, data_dir):
            pids.add(pid)
    if not pids:
        return
    signal_pids(pids, signal.SIGKILL)
    left = await wait_gone(pids, 10.0)
    if left:
        raise PrepareError(f"old PostgreSQL processes {sorted(left)} did not end after SIGKILL")


# ---- the data directory -------------------------------------------------------------------------

@dataclass(frozen=True)
class Survey:
    state: str  # "missing", "empty", "cluster", "roll-forward"
    staging: str | None = None  # the complete staging directory to finish moving (roll-forward)
    ours: bool = False  # the cluster carries our marker (it was made by hive-init)


def siblings(data_dir: str) -> list[str]:
    parent, base = os.path.split(data_dir)
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return []
    return [os.path.join(parent, n) for n in names
            if n.startswith(base + SIBLING_INFIX) and os.path.isdir(os.path.join(parent, n))
            and not os.path.islink(os.path.join(parent, n))]


def survey(data_dir: str) -> Survey:
    try:
        st = os.lstat(data_dir)
    except FileNotFoundError:
        return Survey("missing")
    if stat.S_ISLNK(st.st_mode):
        st = os.stat(data_dir)  # a symlink to a directory is fine
    if not stat.S_ISDIR(st.st_mode):
        raise PrepareError(f"data_dir {data_dir} exists and is not a directory")
    try:
        entries = set(os.listdir(data_dir))
    except OSError as e:
        raise PrepareError(f"cannot read data_dir {data_dir}: {e.strerror}") from None
    stagings = sorted(e for e in entries if e.startswith(INNER_PREFIX))
    for name in stagings:
        if os.path.isfile(os.path.join(data_dir, name, MARKER)):
            return Survey("roll-forward", os.path.join(data_dir, name))
    rest = entries - set(stagings) - IGNORED_ENTRIES
    if "PG_VERSION" in rest:
        return Survey("cluster", ours=MARKER in rest)
    if not rest:
        return Survey("empty")
    shown = ", ".join(sorted(rest)[:5]) + (", ..." if len(rest) > 5 else "")
    raise PrepareError(f"data_dir {data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION; "
                       f"found {shown}): move its contents away or point data_dir at another directory; "
                       "hive-init never deletes it")


def inner_stagings(data_dir: str) -> list[str]:
    try:
        names = os.listdir(data_dir)
    except OSError:
        return []
    return [os.path.join(data_dir, n) for n in names if n.startswith(INNER_PREFIX)]


def new_sibling(data_dir: str) -> str:
    return f"{data_dir}{SIBLING_INFIX}{secrets.token_hex(4)}"


def new_inner(data_dir: str) -> str:
    return os.path.join(data_dir, f"{INNER_PREFIX}{secrets.token_hex(4)}")


def remove_tree(path: str) -> None:
    def onerror(func, p, exc):  # a read-only entry: make it writable and retry once
        try:
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=onerror)


def write_marker(directory: str, details: dict) -> None:
    path = os.path.join(directory, MARKER)
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
        json.dump(details, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    fsync_dir(directory)


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_sibling(staging: str, data_dir: str) -> None:
    """The cluster (marker included) takes data_dir's place in one rename."""
    os.rename(staging, data_dir)
    fsync_dir(os.path.dirname(data_dir))


def roll_forward(staging: str, data_dir: str) -> None:
    """Move a complete staging directory's entries into data_dir: PG_VERSION second to last, the
    marker last, so an interrupted move is never mistaken for a finished cluster."""
    names = os.listdir(staging)
    late = [n for n in ("PG_VERSION", MARKER) if n in names]
    for name in [n for n in names if n not in late] + late:
        if name in late:
            fsync_dir(data_dir)  # everything before it is in place first
        target = os.path.join(data_dir, name)
        if os.path.lexists(target):
            # moved by an interrupted earlier roll-forward of this same staging? Only our own
            # staging's names can be here (survey refused anything else), so replace it
            if os.path.isdir(target) and not os.path.islink(target):
                remove_tree(target)
            else:
                os.unlink(target)
        os.rename(os.path.join(staging, name), target)
    fsync_dir(data_dir)
    os.rmdir(staging)


# ---- ownership and modes ------------------------------------------------------------------------
# Modes are always set explicitly, never left to the umask: hive-init's umask is not ours to rely
# on (and another task may have it changed for a moment).

def make_dir(path: str, mode: int) -> None:
    os.mkdir(path, mode)
    os.chmod(path, mode)


def make_dirs(path: str, mode: int = 0o755) -> None:
    """Like os.makedirs, with `mode` on every directory it creates."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        make_dirs(parent, mode)
    try:
        make_dir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def make_private_dir(path: str, run_as: RunAs | None, what: str, mode: int = 0o700,
                     ignore: frozenset[str] = frozenset()) -> None:
    """Create `path` (and its parents, 0755) for PostgreSQL's use: owned by the user it runs as,
    with `mode`. An existing directory is taken over only if it is that user's already, or
    empty; a shared directory (like /tmp) is never chmod-ed."""
    uid = run_as.uid if run_as else os.geteuid()
    gid = run_as.gid if run_as else os.getegid()
    try:
        make_dirs(os.path.dirname(path))
        make_dir(path, mode)
    except FileExistsError:
        pass
    except OSError as e:
        raise PrepareError(f"cannot create {what} {path}: {e.strerror}") from None
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise PrepareError(f"{what} {path} is not a directory")
    if st.st_uid != uid:
        if os.geteuid() != 0:
            raise PrepareError(f"{what} {path} belongs to uid {st.st_uid}, not to this user (uid {uid})")
        if [n for n in os.listdir(path) if n not in ignore and not n.startswith(INNER_PREFIX)]:
            raise PrepareError(f"{what} {path} belongs to uid {st.st_uid} and is not empty: give PostgreSQL "
                               "a directory of its own")
        os.chown(path, uid, gid)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def fix_ownership(data_dir: str, run_as: RunAs | None) -> None:
    """As root: the data directory and everything in it belongs to the user PostgreSQL runs as
    (a volume from another image may carry another uid, as the official image's 999). Mode 0700."""
    if run_as is None or os.geteuid() != 0:
        st = os.stat(data_dir)
        if st.st_uid != os.geteuid():
            raise PrepareError(f"data_dir {data_dir} belongs to uid {st.st_uid}, not to the user hive-init runs as "
                               f"(uid {os.geteuid()})")
        if stat.S_IMODE(st.st_mode) not in (0o700, 0o750):
            os.chmod(data_dir, 0o700)
        return
    uid, gid = run_as.uid, run_as.gid

    def fix(path: str, st: os.stat_result) -> None:
        if st.st_uid != uid:
            os.lchown(path, uid, gid)

    st = os.stat(data_dir)
    fix(data_dir, st)
    if stat.S_IMODE(st.st_mode) not in (0o700, 0o750):
        os.chmod(data_dir, 0o700)
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            p = os.path.join(root, name)
            try:
                fix(p, os.lstat(p))
            except FileNotFoundError:
                pass


def chown_to(path: str, run_as: RunAs | None) -> None:
    if run_as is not None and os.geteuid() == 0:
        os.chown(path, run_as.uid, run_as.gid)


def readable_by(path: str, run_as: RunAs | None) -> bool:
    if run_as is None or os.geteuid() != 0:
        return os.access(path, os.R_OK)
    try:
        st = os.stat(path)
    except OSError:
        return False
    mode = st.st_mode
    if st.st_uid == run_as.uid:
        return bool(mode & stat.S_IRUSR)
    if st.st_gid == run_as.gid or st.st_gid in run_as.groups:
        return bool(mode & stat.S_IRGRP)
    return bool(mode & stat.S_IROTH)
