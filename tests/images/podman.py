"""Podman, set up for this kind of machine (see the project notes on containers): root, no
systemd, cgroup v1 "hybrid", no registry. Used by test_podman_images.py; importable by hand:

    uv run python -c 'from tests.images.podman import Podman; Podman().ensure_debian_base()'

Everything lives under one folder (HIVE_PODMAN_ROOT, default /var/tmp/hive-init-podman):
its own containers.conf and storage.conf, the image storage, and a lock so that two test runs
do not debootstrap at once. The Debian base image made with debootstrap stays cached there
across runs; the images and containers of a test are removed by the test.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import free_port  # noqa: F401  (re-exported for the tests that import it from here)

ROOT = Path(os.environ.get("HIVE_PODMAN_ROOT", "/var/tmp/hive-init-podman"))
DEBIAN_TAGS = ("localhost/debian:bookworm-slim", "docker.io/library/debian:bookworm-slim")
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

CONTAINERS_CONF = """\
# written by tests/images/podman.py
[containers]
# the hard open-files limit here is 20000 and root lacks CAP_SYS_RESOURCE: podman's defaults fail
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
# crun 1.8 refuses cgroup v1 "hybrid"; there is no systemd for the systemd cgroup manager
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

STORAGE_CONF = """\
# written by tests/images/podman.py
[storage]
driver = "overlay"
graphroot = "{root}/storage"
runroot = "{root}/run"
"""

# what debian:bookworm-slim leaves out, so that the emulated base stays close to the real one
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
"""


def unavailable_reason() -> str | None:
    """Why the podman tests cannot run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install -y podman runc debootstrap)"
    if os.geteuid() != 0:
        return "the podman image tests run podman as root (rootless podman is not set up here)"
    if shutil.which("runc") is None:
        return "runc is not installed (apt-get install -y runc): crun cannot run on this machine's cgroups"
    return None



class PodmanError(RuntimeError):
    pass


class Podman:
    def __init__(self, root: Path = ROOT):
        self.root = root
        conf = root / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "containers.conf").write_text(CONTAINERS_CONF)
        (conf / "storage.conf").write_text(STORAGE_CONF.format(root=root))
        self.env = dict(os.environ)
        self.env.update(
            CONTAINERS_CONF=str(conf / "containers.conf"),
            CONTAINERS_STORAGE_CONF=str(conf / "storage.conf"),
            BUILDAH_FORMAT="docker",  # the OCI format drops HEALTHCHECK
        )

    def __call__(self, *args: str, check: bool = True, timeout: float = 900, input: bytes | None = None,
                 stdin=None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["podman", *args], env=self.env, capture_output=True, timeout=timeout,
                              input=input.decode() if input is not None else None, stdin=stdin, text=True)
        if check and proc.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)} → {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    # ------------------------------------------------------------ the Debian base image

    @contextmanager
    def _lock(self):
        with open(self.root / "lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def image_exists(self, ref: str) -> bool:
        return self("image", "exists", ref, check=False).returncode == 0

    def ensure_debian_base(self) -> float:
        """`debian:bookworm-slim` in the local storage (no registry here): made with debootstrap
        the first time and kept. Returns the seconds spent (0 when it was cached)."""
        with self._lock():
            if all(self.image_exists(tag) for tag in DEBIAN_TAGS):
                return 0.0
            start = time.monotonic()
            if not self.image_exists(DEBIAN_TAGS[0]):
                self._debootstrap_import()
            for tag in DEBIAN_TAGS[1:]:
                self("tag", DEBIAN_TAGS[0], tag)
            return time.monotonic() - start

    def _debootstrap_import(self) -> None:
        if shutil.which("debootstrap") is None:
            raise PodmanError("debootstrap is not installed (apt-get install -y debootstrap)")
        rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=self.root))
        try:
            subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()],
                           check=True, capture_output=True, timeout=900)
            policy = rootfs / "usr/sbin/policy-rc.d"  # package installs must not start services
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
            (rootfs / "etc/dpkg/dpkg.cfg.d/excludes").write_text(DPKG_EXCLUDES)
            host_sources = Path("/etc/apt/sources.list.d/debian.sources")
            if host_sources.is_file():  # the same mirrors (and snapshot pinning) as the host
                shutil.copy(host_sources, rootfs / "etc/apt/sources.list.d/debian.sources")
                (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
            for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
                for entry in (rootfs / junk).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
            try:
                self("import", "--change", 'CMD ["bash"]', "-", DEBIAN_TAGS[0], stdin=tar.stdout)
            finally:
                tar.stdout.close()
                tar.wait()
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)

    # ------------------------------------------------------------ images and containers

    def build(self, context: str, dockerfile: str, tag: str, build_args: dict[str, str] | None = None,
              secrets: dict[str, str] | None = None) -> float:
        args = ["build", "--format", "docker", "--pull=never", "-f", dockerfile, "-t", tag]
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        for key, path in (secrets or {}).items():
            args += ["--secret", f"id={key},src={path}"]
        start = time.monotonic()
        self(*args, context, timeout=1800)
        return time.monotonic() - start

    def image_size(self, ref: str) -> int:
        return int(self("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())

    def inspect(self, ref: str) -> dict:
        return json.loads(self("inspect", ref).stdout)[0]

    def state(self, ctr: str) -> dict:
        return self.inspect(ctr)["State"]

    def logs(self, ctr: str) -> str:
        proc = self("logs", ctr, check=False)
        return proc.stdout + proc.stderr

    def wait_healthy(self, ctr: str, timeout: float = 120.0, interval: float = 1.0) -> float:
        """Drives the HEALTHCHECK by hand (podman schedules it with systemd timers, absent here)."""
        start = time.monotonic()
        last = None
        while time.monotonic() - start < timeout:
            last = self("healthcheck", "run", ctr, check=False)
            if last.returncode == 0:
                return time.monotonic() - start
            if not self.state(ctr).get("Running"):
                raise PodmanError(f"{ctr} exited ({self.state(ctr).get('ExitCode')}) before it was healthy:\n"
                                  f"{self.logs(ctr)[-6000:]}")
            time.sleep(interval)
        raise PodmanError(f"{ctr} not healthy within {timeout}s ({last and (last.stdout + last.stderr).strip()}):\n"
                          f"{self.logs(ctr)[-6000:]}")

    def memory_usage(self, ctr: str) -> str:
        return self("stats", "--no-stream", "--format", "{{.MemUsage}}", ctr).stdout.strip()

    def remove(self, containers=(), images=(), volumes=()) -> None:
        for ctr in containers:
            self("rm", "-f", "-t", "0", ctr, check=False)
        for image in images:
            self("rmi", "-f", image, check=False)
        for volume in volumes:
            self("volume", "rm", "-f", volume, check=False)


def debian_mirror() -> str:
    """The host's Debian mirror (deb822 sources first, then sources.list)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        for line in sources.read_text().splitlines():
            m = re.match(r"URIs:\s*(\S+)", line)
            if m and "security" not in m.group(1):
                return m.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\b", line)
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"
