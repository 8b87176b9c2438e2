"""#14: nothing that walks a file tree runs on the init's event loop. A data directory of 20,000
entries that belong to another uid (a volume from another image) is given back to `postgres` on
the start, in a worker thread: /livez keeps answering all the while.

The longest gap between two answers is printed (`-s`), not asserted (no timing bound in a test);
the figure of a run is in the README's security section and tests/chaos/SCENARIOS.md."""

import http.client
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import free_port, needs_root

pytestmark = [needs_root, pytest.mark.usefixtures("postgres_user")]
FILES = 20_000
BOOT = 120.0  # a bound on waiting only


class Poller:
    """/livez back to back; every answer's status and the monotonic time it came."""

    def __init__(self, port: int, timeout: float):
        self.port, self.timeout = port, timeout
        self.answers: list[tuple[object, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                conn.request("GET", "/livez")
                status: object = conn.getresponse().status
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
            finally:
                conn.close()
            self.answers.append((status, time.monotonic()))
            self._stop.wait(0.01)

    def stop(self) -> list[tuple[object, float]]:
        self._stop.set()
        self._thread.join(self.timeout + 5)
        return self.answers


def test_livez_answers_while_a_20000_file_data_directory_is_reowned(start_init, tmp_path):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="hive-reown-", dir="/tmp"))
    base.chmod(0o755)
    config = f"""
        [programs.postgres]
        kind = "postgres"
        user = "postgres"
        data_dir = "{base / 'data'}"
        socket_dir = "{base / 'sock'}"
        init_dir = "{base / 'initdb.d'}"
        port = {free_port()}
        listen_addresses = "127.0.0.1"
    """
    try:
        init = start_init(config, pid1=True, http=True)
        init.wait_state("postgres", "READY", timeout=BOOT)
        init.wait_msg("health endpoint listening")
        # 20,000 entries of root's in the data directory (PostgreSQL ignores a directory it
        # does not know), then the postmaster dies: its restart re-owns them while the init
        # keeps serving
        junk = base / "data" / "restored"
        junk.mkdir()
        for i in range(FILES // 100):
            sub = junk / f"d{i:03d}"
            sub.mkdir()
            for j in range(99):
                (sub / f"f{j:02d}").touch()
        postmaster = next(p for p in psutil.Process(init.init_pid).children() if p.name() == "postgres")
        poller = Poller(init.port, timeout=10.0)
        try:
            postmaster.kill()
            init.wait_msg("entries given to user postgres", timeout=BOOT)
            init.wait_state("postgres", "READY", timeout=BOOT)
        finally:
            answers = poller.stop()
        assert os.stat(junk / "d000" / "f00").st_uid != 0  # it was re-owned meanwhile
        assert answers and all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:5]
        times = [t for _, t in answers]
        gap = max(b - a for a, b in zip(times, times[1:]))
        print(f"\n/livez during the re-own of {FILES} entries: {len(answers)} answers, longest gap {gap * 1000:.0f} ms")
        assert init.stop() == 0
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
