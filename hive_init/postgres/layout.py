"""The data directory on disk: what state it is in, and building a new one so that a first boot
killed at any moment leaves nothing or a complete cluster.

Layout of a first boot:
- data_dir missing: the cluster is built in a sibling `<data_dir>.initdb-<random>` (same
  filesystem), the marker is written in it, and it is renamed into place: one atomic step.
- data_dir empty (a mount point): the cluster is built in `<data_dir>/.hive-init-initdb-<random>`
  (same filesystem as the target), the marker is written in it, then its entries are moved up one
  by one, the marker last. A staging directory that holds the marker is complete: a boot that
  finds one finishes the move (rolls forward). One without it is removed.

A staging directory is taken for a leftover of ours only if it is a real directory (not a link),
owned by the user PostgreSQL runs as, mode 0700, as a first boot makes it; the user it belongs
to could have made one, but then only its own files are at stake. Every step here blocks (listing,
renames, fsyncs, tree removal): the kind calls them in a worker thread.
"""

import json
import os
import secrets
import stat
from dataclasses import dataclass

from hive_init import securefs
from hive_init.runtime.kind import PrepareError

MARKER = "hive-init-initdb.done"
SIBLING_INFIX = ".initdb-"
INNER_PREFIX = ".hive-init-initdb-"
IGNORED_ENTRIES = {"lost+found"}  # the root of an ext4 volume


@dataclass(frozen=True)
class Survey:
    state: str  # "missing", "empty", "cluster", "roll-forward"
    staging: str | None = None  # the complete staging directory to finish moving (roll-forward)
    ours: bool = False  # the cluster carries our marker (it was made by hive-init)


def canonical_path(path: str) -> str:
    """The path the kernel shows for `path` (a process's cwd, for one), reached without
    following a link another user could have planted; `path` itself if it does not exist."""
    try:
        fd = securefs.open_directory(path)
    except FileNotFoundError:
        return os.path.normpath(path)
    try:
        return securefs.real_path_of(fd)
    finally:
        os.close(fd)


def is_staging(path: str, uid: int) -> bool:
    """A real directory of `uid`, mode 0700: what a first boot makes (see the module's note)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700


def siblings(data_dir: str, uid: int | None = None) -> list[str]:
    parent, base = os.path.split(data_dir)
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return []
    found = [os.path.join(parent, n) for n in names if n.startswith(base + SIBLING_INFIX)]
    return [p for p in found if is_staging(p, os.geteuid() if uid is None else uid)]


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
        path = os.path.join(data_dir, name)
        if not os.path.islink(path) and os.path.isfile(os.path.join(path, MARKER)):
            return Survey("roll-forward", path)
    rest = entries - set(stagings) - IGNORED_ENTRIES
    if "PG_VERSION" in rest:
        return Survey("cluster", ours=MARKER in rest)
    if not rest:
        return Survey("empty")
    shown = ", ".join(sorted(rest)[:5]) + (", ..." if len(rest) > 5 else "")
    raise PrepareError(f"data_dir {data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION; "
                       f"found {shown}): move its contents away or point data_dir at another directory; "
                       "hive-init never deletes it")


def inner_stagings(data_dir: str, uid: int | None = None) -> list[str]:
    try:
        names = os.listdir(data_dir)
    except OSError:
        return []
    found = [os.path.join(data_dir, n) for n in names if n.startswith(INNER_PREFIX)]
    return [p for p in found if is_staging(p, os.geteuid() if uid is None else uid)]


def new_sibling(data_dir: str) -> str:
    return f"{data_dir}{SIBLING_INFIX}{secrets.token_hex(4)}"


def new_inner(data_dir: str) -> str:
    return os.path.join(data_dir, f"{INNER_PREFIX}{secrets.token_hex(4)}")


def remove_tree(path: str) -> None:
    """shutil.rmtree works by descriptor on Linux (rmtree.avoids_symlink_attacks) and refuses a
    link at the top: nothing outside `path` can be reached through it. Imported here: shutil (and
    bz2, lzma, zlib with it) would stay resident for the container's life for a rare removal."""
    import shutil

    shutil.rmtree(path)


def _open_staging(path: str) -> int:
    """The staging directory by descriptor, not through a link: it sits in a directory that
    PostgreSQL's user can write, and root renames and writes inside it."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def write_marker(directory: str, details: dict) -> None:
    dir_fd = _open_staging(directory)
    try:
        tmp = MARKER + ".tmp"
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(details, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, MARKER, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
    marker last, so an interrupted move is never mistaken for a finished cluster. By the two
    directories' descriptors: a staging directory swapped for a link cannot make root move
    files out of another directory."""
    src = _open_staging(staging)
    try:
        dst = securefs.open_directory(data_dir)
        try:
            _roll_forward(src, dst, data_dir)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    os.rmdir(staging)


def _roll_forward(src: int, dst: int, data_dir: str) -> None:
    names = os.listdir(src)
    late = [n for n in ("PG_VERSION", MARKER) if n in names]
    for name in [n for n in names if n not in late] + late:
        if name in late:
            fsync_dir(data_dir)  # everything before it is in place first
        try:
            st = os.stat(name, dir_fd=dst, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            # moved by an interrupted earlier roll-forward of this same staging? Only our own
            # staging's names can be here (survey refused anything else), so replace it
            if stat.S_ISDIR(st.st_mode):
                import shutil

                shutil.rmtree(name, dir_fd=dst)
            else:
                os.unlink(name, dir_fd=dst)
        os.rename(name, name, src_dir_fd=src, dst_dir_fd=dst)
    fsync_dir(data_dir)
