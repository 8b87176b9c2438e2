"""hive_init.securefs, the one way root opens a path another user may change: links planted in
a directory someone else can write are refused, links in root's own directories are followed,
FIFOs, devices and hard links are refused, reads are bounded."""

import os
import stat
from pathlib import Path

import pytest

from hive_init import securefs


@pytest.fixture
def shared(open_dir: Path, mallory) -> Path:
    """A directory mallory can write (as /var/log/hive is app's)."""
    path = open_dir / "shared"
    path.mkdir()
    os.chown(path, mallory.uid, mallory.gid)
    return path


def test_a_link_planted_by_another_user_is_refused(open_dir, shared, mallory):
    (open_dir / "secret").write_text("root's")
    assert mallory.run(["ln", "-s", str(open_dir), str(shared / "dir")]).returncode == 0
    assert mallory.run(["ln", "-s", str(open_dir / "secret"), str(shared / "file")]).returncode == 0
    with pytest.raises(securefs.UnsafePath):
        securefs.open_directory(str(shared / "dir"))
    with pytest.raises(OSError):  # ELOOP: O_NOFOLLOW on the last component
        securefs.read_bounded(str(shared / "file"), 100)


def test_a_link_in_roots_own_directory_is_followed(open_dir):
    target = open_dir / "real"
    target.mkdir()
    (target / "f").write_text("ok")
    os.symlink(target, open_dir / "alias")  # open_dir: root's, 0755
    fd = securefs.open_directory(str(open_dir / "alias"))
    try:
        assert securefs.real_path_of(fd) == str(target)
    finally:
        os.close(fd)
    assert securefs.read_bounded(str(open_dir / "alias" / "f"), 10) == b"ok"


def test_fifos_devices_hard_links_and_long_files_are_refused(open_dir):
    os.mkfifo(open_dir / "fifo")
    with pytest.raises(securefs.UnsafePath):
        securefs.read_bounded(str(open_dir / "fifo"), 100)  # and does not block on it
    with pytest.raises(OSError):
        securefs.read_bounded("/dev/zero", 100)
    (open_dir / "a").write_text("x")
    os.link(open_dir / "a", open_dir / "b")
    with pytest.raises(securefs.UnsafePath):
        securefs.read_bounded(str(open_dir / "a"), 100)
    (open_dir / "long").write_bytes(b"x" * 101)
    with pytest.raises(OSError):
        securefs.read_bounded(str(open_dir / "long"), 100)


def test_missing_directories_are_created_with_the_mode_asked(open_dir):
    old = os.umask(0o077)
    try:
        fd = securefs.open_directory(str(open_dir / "a" / "b"), create_mode=0o755)
    finally:
        os.umask(old)
    os.close(fd)
    assert stat.S_IMODE((open_dir / "a" / "b").stat().st_mode) == 0o755
