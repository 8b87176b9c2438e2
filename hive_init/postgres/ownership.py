"""Who owns the PostgreSQL directories, and with which mode.

The data directory belongs to the `postgres` user, and hive-init (root) walks it on every start
to give back what a volume from another image (the official image's uid 999) or a restore left
to another uid. `postgres` can change that tree while root walks it, so the walk goes by
descriptor: os.fwalk opens each directory relative to its parent's descriptor and checks it is
the directory it stat-ed (a directory swapped for a link is not entered), and each entry is
changed through a descriptor of that very inode (opened with O_PATH|O_NOFOLLOW), never by
re-resolving a path. A regular file with another hard link is left alone (it may be a link to a
file outside the tree). All of it blocks: the kind calls it in a worker thread.

Modes are always set explicitly, never left to the umask: hive-init's umask is not ours to rely
on (and another task may have it changed for a moment).
"""

import os
import stat

from hive_init import securefs
from hive_init.config.model import RunAs
from hive_init.postgres.layout import INNER_PREFIX
from hive_init.runtime.kind import PrepareError

_ENTRY_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


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


def _chown_fd(fd: int, uid: int, gid: int) -> None:
    # fchown does not take an O_PATH descriptor; its /proc magic link is that inode itself
    os.chown(f"/proc/self/fd/{fd}", uid, gid)


def _chmod_fd(fd: int, mode: int) -> None:
    os.chmod(f"/proc/self/fd/{fd}", mode)


def make_private_dir(path: str, run_as: RunAs | None, what: str, mode: int = 0o700,
                     ignore: frozenset[str] = frozenset()) -> None:
    """Create `path` (and its parents, 0755) for PostgreSQL's use: owned by the user it runs as,
    with `mode`. An existing directory is taken over only if it is that user's already, or
    empty; a shared directory (like /tmp) is never chmod-ed."""
    uid = run_as.uid if run_as else os.geteuid()
    gid = run_as.gid if run_as else os.getegid()
    try:
        parent = securefs.open_directory(os.path.dirname(path), create_mode=0o755)
        try:
            os.mkdir(os.path.basename(path), mode, dir_fd=parent)
        except FileExistsError:
            pass
        finally:
            os.close(parent)
        fd = securefs.open_directory(path)
    except NotADirectoryError:
        raise PrepareError(f"{what} {path} is not a directory") from None
    except OSError as e:
        raise PrepareError(f"cannot create {what} {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != uid:
            if os.geteuid() != 0:
                raise PrepareError(f"{what} {path} belongs to uid {st.st_uid}, not to this user (uid {uid})")
            names = os.listdir(f"/proc/self/fd/{fd}")
            if [n for n in names if n not in ignore and not n.startswith(INNER_PREFIX)]:
                raise PrepareError(f"{what} {path} belongs to uid {st.st_uid} and is not empty: give PostgreSQL "
                                   "a directory of its own")
            _chown_fd(fd, uid, gid)
        if stat.S_IMODE(st.st_mode) != mode:
            _chmod_fd(fd, mode)
    finally:
        os.close(fd)


def fix_ownership(data_dir: str, run_as: RunAs | None) -> int:
    """As root: the data directory and everything in it belongs to the user PostgreSQL runs as
    (a volume from another image may carry another uid, as the official image's 999). Mode 0700.
    Returns how many entries were changed. Blocking: run it in a worker thread."""
    top = securefs.open_directory(data_dir)
    try:
        st = os.fstat(top)
        if run_as is None or os.geteuid() != 0:
            if st.st_uid != os.geteuid():
                raise PrepareError(f"data_dir {data_dir} belongs to uid {st.st_uid}, not to the user hive-init "
                                   f"runs as (uid {os.geteuid()})")
            if stat.S_IMODE(st.st_mode) not in (0o700, 0o750):
                _chmod_fd(top, 0o700)
            return 0
        uid, gid = run_as.uid, run_as.gid
        changed = 0
        if (st.st_uid, st.st_gid) != (uid, gid) and st.st_uid != uid:
            _chown_fd(top, uid, gid)
            changed += 1
        if stat.S_IMODE(st.st_mode) not in (0o700, 0o750):
            _chmod_fd(top, 0o700)
        for _root, dirs, files, root_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for name in dirs + files:
                changed += _fix_entry(root_fd, name, uid, gid)
        return changed
    finally:
        os.close(top)


def _fix_entry(dir_fd: int, name: str, uid: int, gid: int) -> int:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if st.st_uid == uid:
        return 0
    if stat.S_ISLNK(st.st_mode):
        # the link itself (fchownat AT_SYMLINK_NOFOLLOW): whatever it points at is not touched
        try:
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return 0
        return 1
    try:
        fd = os.open(name, _ENTRY_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return 0
    try:
        st = os.fstat(fd)  # the inode we hold, whatever the name means by now
        if st.st_uid == uid or stat.S_ISLNK(st.st_mode):
            return 0
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            return 0  # a hard link may be to a file outside the tree
        _chown_fd(fd, uid, gid)
        return 1
    finally:
        os.close(fd)


def chown_to(path: str, run_as: RunAs | None) -> None:
    if run_as is not None and os.geteuid() == 0:
        os.chown(path, run_as.uid, run_as.gid, follow_symlinks=False)


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
