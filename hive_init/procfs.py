"""The one reader of /proc and of the container's memory cgroup (a leaf: nothing of hive_init).

What a program uses is what its whole process tree uses: the main process and every
descendant (PostgreSQL's backends are the postmaster's children). The tree is found from one
pass over /proc/*/stat (each process's parent), so one reading of every program costs one
scan, however many programs there are.

Every function here does blocking file I/O: callers in the init run them in a worker thread
(anyio.to_thread), and only when someone asks (status, a scrape, a memory limit's watcher).

Memory: a process's RSS counts every page it maps, shared ones included, so the RSS of a
PostgreSQL tree counts shared_buffers once per backend that touched them. PSS (proportional
set size, /proc/PID/smaps_rollup) splits each shared page between the processes that map it,
so PSS adds up across a tree and across programs to what the container really holds. "memory"
is the PSS sum where the kernel gives it for every process of the tree, else the RSS sum
(smaps_rollup needs ptrace access: root without CAP_SYS_PTRACE, as in Docker and podman by
default, cannot read it for processes of other users), and says which (`memory_source`).
"""

import functools
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PROC = "/proc"
CGROUP_ROOT = "/sys/fs/cgroup"
UNLIMITED_V1 = 1 << 62  # v1 says "no limit" with a huge page-aligned number (9223372036854771712)


@dataclass(frozen=True, slots=True)
class Stat:
    """The fields of /proc/PID/stat that hive-init uses (proc(5)), times in seconds."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    utime: float
    stime: float
    cutime: float  # CPU time of children this process has waited for
    cstime: float
    start_ticks: int  # clock ticks after boot
    rss: int  # bytes

    @property
    def cpu_seconds(self) -> float:
        """Its own CPU time and that of the children it has reaped: summed over a tree this
        only grows, as a process's time moves into its parent's when it is reaped."""
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(data: bytes) -> Stat:
    """The command name (field 2) is in parentheses and may hold spaces and ')': every field
    after it is found from the last ')'."""
    close = data.rindex(b")")
    pid = int(data[: data.index(b"(")])
    comm = data[data.index(b"(") + 1 : close].decode("utf-8", "replace")
    rest = data[close + 2 :].split()
    tick = float(CLOCK_TICKS)
    return Stat(
        pid=pid, comm=comm, state=rest[0].decode(), ppid=int(rest[1]), pgrp=int(rest[2]), session=int(rest[3]),
        utime=int(rest[11]) / tick, stime=int(rest[12]) / tick, cutime=int(rest[13]) / tick,
        cstime=int(rest[14]) / tick, start_ticks=int(rest[19]), rss=int(rest[21]) * PAGE_SIZE,
    )


def read_stat(pid: int) -> Stat | None:
    """None when the process is gone (or is not a number's process any more)."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            return parse_stat(f.read())
    except (OSError, ValueError, IndexError):
        return None


def running(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds no memory, no files, no shared
    memory: it only waits for its parent to reap it)."""
    stat = read_stat(pid)
    return stat is not None and stat.state not in ("Z", "X")


def pids() -> Iterator[int]:
    """Every process this /proc shows (in a container: the container's)."""
    for entry in os.listdir(PROC):
        if entry.isdigit():
            yield int(entry)


def all_stats() -> dict[int, Stat]:
    """Every process this /proc shows, by pid."""
    stats = {}
    for pid in pids():
        stat = read_stat(pid)
        if stat is not None:
            stats[stat.pid] = stat
    return stats


# ---- who a process is: its user, command line, working directory, environment ----------------
# Each is one read of one file: the process may end between two of them (each says None then).
def owner(pid: int) -> int | None:
    """The owner of /proc/PID: the kernel sets it to the process's effective uid (to root while
    the process is not dumpable, e.g. just after a set-uid exec); None when it is gone."""
    try:
        return os.stat(f"{PROC}/{pid}").st_uid
    except OSError:
        return None


def cmdline(pid: int) -> tuple[str, ...] | None:
    """Its arguments (empty for a kernel thread or a zombie); None when it is gone."""
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return tuple(a.decode("utf-8", "replace") for a in data.split(b"\0") if a)


def cwd(pid: int) -> str | None:
    """Its working directory as the kernel names it (the path of the directory it holds, not a
    name resolved by us); None when it is gone or we may not look (another user's process, and
    we are not root)."""
    try:
        return os.readlink(f"{PROC}/{pid}/cwd")
    except OSError:
        return None


def environ(pid: int) -> list[bytes] | None:
    """Its initial environment ("NAME=value" entries, as it was exec'd); None when it is gone or
    not ours to read."""
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return None


def epoll_targets(pid: int) -> set[int]:
    """The inodes that the epoll sets of `pid` watch: /proc shows each epoll's targets in its
    fdinfo, a line `tfd: N events: ... ino:HEX` per target. Empty when it has none, is gone or
    is not ours to read."""
    found: set[int] = set()
    try:
        fds = os.listdir(f"{PROC}/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            if os.readlink(f"{PROC}/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                continue
            with open(f"{PROC}/{pid}/fdinfo/{fd}", "rb") as f:
                for line in f:
                    if line.startswith(b"tfd:") and b"ino:" in line:
                        found.add(int(line.rsplit(b"ino:", 1)[1].split()[0], 16))
        except (OSError, ValueError, IndexError):
            continue  # closed meanwhile, or not an epoll any more
    return found


def descendants(root: int, stats: Mapping[int, Stat]) -> list[int]:
    """`root` and everything below it, root first; [] when root is not in `stats`."""
    if root not in stats:
        return []
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def rollup(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) in bytes from /proc/PID/smaps_rollup (Linux 4.14+), counted by walking the
    page tables, so exact where stat's RSS is the kernel's approximate per-CPU counters (off by
    up to a few hundred KiB); None where the kernel does not give it to us (no such file, or no
    ptrace access to the process)."""
    rss = pss = None
    try:
        with open(f"{PROC}/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        return None
    return (rss, pss) if rss is not None and pss is not None else None


def open_fds(pid: int) -> int | None:
    """How many descriptors the process holds; None without access (the directory is its
    user's, mode 0500: root needs CAP_DAC_OVERRIDE for another user's process)."""
    try:
        return len(os.listdir(f"{PROC}/{pid}/fd"))
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    pid: int
    comm: str
    rss: int
    pss: int | None
    cpu_seconds: float
    fds: int | None


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """A program's process tree at one moment."""

    root: int
    processes: tuple[ProcessUsage, ...]
    rss: int
    pss: int | None  # None unless every process's PSS could be read
    cpu_seconds: float
    fds: int | None  # None unless every process's descriptors could be counted

    @property
    def memory(self) -> int:
        return self.pss if self.pss is not None else self.rss

    @property
    def memory_source(self) -> str:
        return "pss" if self.pss is not None else "rss"


def tree_usage(root: int, stats: Mapping[int, Stat] | None = None, with_fds: bool = True) -> TreeUsage | None:
    """The usage of `root`'s tree; None when root is gone. `stats` from all_stats() lets one
    scan serve many trees."""
    stats = all_stats() if stats is None else stats
    processes = []
    for pid in descendants(root, stats):
        stat = stats[pid]
        if stat.state in ("Z", "X"):  # a zombie holds no memory and no descriptors
            processes.append(ProcessUsage(pid, stat.comm, 0, 0, stat.cpu_seconds, 0))
            continue
        exact = rollup(pid)
        processes.append(ProcessUsage(pid, stat.comm, exact[0] if exact else stat.rss, exact[1] if exact else None,
                                      stat.cpu_seconds, open_fds(pid) if with_fds else None))
    if not processes:
        return None
    pss_values = [p.pss for p in processes]
    fd_values = [p.fds for p in processes]
    return TreeUsage(
        root=root, processes=tuple(processes), rss=sum(p.rss for p in processes),
        pss=None if None in pss_values else sum(v for v in pss_values if v is not None),
        cpu_seconds=sum(p.cpu_seconds for p in processes),
        fds=None if None in fd_values else sum(v for v in fd_values if v is not None),
    )


def trees(roots: Mapping[str, int]) -> dict[str, TreeUsage]:
    """Each named root's tree, from one scan of /proc."""
    stats = all_stats()
    out = {}
    for name, root in roots.items():
        usage = tree_usage(root, stats)
        if usage is not None:
            out[name] = usage
    return out


def uptime_ticks() -> int:
    """Clock ticks since boot (the unit of Stat.start_ticks)."""
    with open(f"{PROC}/uptime", "rb") as f:
        return int(float(f.read().split()[0]) * CLOCK_TICKS)


# ---- OOM scores --------------------------------------------------------------------------------
def read_oom_score_adj(pid: int | str = "self") -> int | None:
    try:
        with open(f"{PROC}/{pid}/oom_score_adj", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def write_oom_score_adj(pid: int | str, value: int) -> None:
    """Raises OSError: EACCES when lowering below what the process may (no CAP_SYS_RESOURCE),
    ESRCH/ENOENT when it is gone."""
    fd = os.open(f"{PROC}/{pid}/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())  # one write: the kernel parses it whole or refuses
    finally:
        os.close(fd)


# ---- the container's memory cgroup --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CgroupMemory:
    version: int  # 2 or 1
    path: str  # the cgroup's directory
    limit: int | None  # bytes; None: no limit
    usage: int | None  # bytes charged to the cgroup (page cache included)
    oom_kills: int | None  # processes the OOM killer killed in it (None: not counted by this kernel)
    events: dict[str, int]  # v2 memory.events (low, high, max, oom, oom_kill, ...); v1: oom_kill, under_oom


def cgroup_dir(proc_cgroup: bytes | None = None, root: str = CGROUP_ROOT) -> tuple[int, str] | None:
    """(version, directory) of the memory cgroup this process is in. In a container with its own
    cgroup namespace (or its cgroup mounted at the root, as Docker and podman do on v1), the path
    it sees is "/" or a path that does not exist under the mount: then the mount itself is ours."""
    if proc_cgroup is None:
        try:
            with open(f"{PROC}/self/cgroup", "rb") as f:
                proc_cgroup = f.read()
        except OSError:
            return None
    v1 = v2 = None
    for line in proc_cgroup.decode("utf-8", "replace").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    if v1 is not None:
        base = os.path.join(root, "memory")
        return 1, _inside(base, v1, "memory.limit_in_bytes")
    if v2 is not None and os.path.exists(os.path.join(root, "cgroup.controllers")):
        return 2, _inside(root, v2, "memory.current")
    return None


@functools.cache
def own_cgroup() -> tuple[int, str] | None:
    """cgroup_dir() of this process, looked up once: the init does not move between cgroups."""
    return cgroup_dir()


def _inside(base: str, path: str, marker: str) -> str:
    candidate = os.path.join(base, path.lstrip("/"))
    return candidate if os.path.exists(os.path.join(candidate, marker)) else base


def _read_int(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == b"max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_keyed(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(path, "rb") as f:
            for line in f:
                key, _, value = line.decode("ascii", "replace").partition(" ")
                try:
                    out[key] = int(value)
                except ValueError:
                    continue
    except OSError:
        pass
    return out


def cgroup_memory(where: tuple[int, str] | None = None) -> CgroupMemory | None:
    where = where or cgroup_dir()
    if where is None:
        return None
    version, path = where
    if version == 2:
        events = _read_keyed(os.path.join(path, "memory.events"))
        return CgroupMemory(2, path, _read_int(os.path.join(path, "memory.max")),
                            _read_int(os.path.join(path, "memory.current")), events.get("oom_kill"), events)
    limit = _read_int(os.path.join(path, "memory.limit_in_bytes"))
    control = _read_keyed(os.path.join(path, "memory.oom_control"))  # oom_kill since Linux 4.13
    return CgroupMemory(1, path, None if limit is None or limit >= UNLIMITED_V1 else limit,
                        _read_int(os.path.join(path, "memory.usage_in_bytes")), control.get("oom_kill"),
                        {k: v for k, v in control.items() if k in ("oom_kill", "under_oom")})


def vmstat_oom_kills() -> int | None:
    """The kernel's count of OOM kills (Linux 4.13+). Not namespaced: in a container it counts
    the whole host's. Read at every spawn: one line found in the bytes, not 180 parsed."""
    try:
        with open(f"{PROC}/vmstat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    at = data.find(b"\noom_kill ")
    if at < 0:
        return None
    try:
        return int(data[at + 10 : data.index(b"\n", at + 1)])
    except ValueError:
        return None


def oom_kill_counts(where: tuple[int, str] | None) -> tuple[int | None, int | None]:
    """(the cgroup's count, the kernel's): an OOM kill of ours moves at least one of them."""
    cgroup = None
    if where is not None:
        version, path = where
        if version == 2:
            cgroup = _read_keyed(os.path.join(path, "memory.events")).get("oom_kill")
        else:
            cgroup = _read_keyed(os.path.join(path, "memory.oom_control")).get("oom_kill")
    return cgroup, vmstat_oom_kills()


def counts_moved(before: Iterable[int | None], after: Iterable[int | None]) -> bool:
    return any(b is not None and a is not None and a > b for b, a in zip(before, after))
