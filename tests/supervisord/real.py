"""The real supervisord (4.x, from the dev group) for differential tests: run on a config of the
test's own, with a per-run socket, log and pid file under the test's tmp dir; driven with the real
supervisorctl. Nothing here is shared between runs."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

BIN = Path(sys.executable).parent
SUPERVISORD = str(BIN / "supervisord")
SUPERVISORCTL = str(BIN / "supervisorctl")
HIVE_INIT = str(BIN / "hive-init")


def header(tmp: Path) -> str:
    """The boilerplate every supervisord.conf carries, pointed at this run's own files."""
    return textwrap.dedent(f"""\
        [unix_http_server]
        file={tmp}/supervisor.sock
        [supervisord]
        nodaemon=true
        logfile={tmp}/supervisord.log
        pidfile={tmp}/supervisord.pid
        loglevel=debug
        [rpcinterface:supervisor]
        supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
        [supervisorctl]
        serverurl=unix://{tmp}/supervisor.sock
        """)


class Supervisord:
    def __init__(self, tmp: Path, programs: str, env: dict[str, str] | None = None):
        self.tmp = tmp
        self.conf = tmp / "supervisord.conf"
        self.conf.write_text(header(tmp) + textwrap.dedent(programs))
        self.proc = subprocess.Popen([SUPERVISORD, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 20
        while self.ctl("pid").returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("supervisord did not come up:\n" + self.log())
            time.sleep(0.05)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SUPERVISORCTL, "-c", str(self.conf), *args], capture_output=True, text=True, timeout=60)

    def log(self) -> str:
        path = self.tmp / "supervisord.log"
        return path.read_text() if path.exists() else ""

    def stop(self, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


def supervisorctl_link(tmp: Path) -> str:
    """hive-init under the name supervisorctl, as the images install it."""
    link = tmp / "bin" / "supervisorctl"
    link.parent.mkdir(exist_ok=True)
    if not link.exists():
        link.symlink_to(HIVE_INIT)
    return str(link)
