"""Floods: a child writing as fast as it can (with and without newlines), a reader of the init's
stdout that stops reading altogether, and thousands of short-lived children. The init's memory
stays bounded, the child is never blocked for good, /livez keeps answering, no descriptor leaks."""

import sys
import time
from pathlib import Path

import pytest

from tests.chaos.util import (
    MB,
    LivenessPoller,
    Sampler,
    assert_no_fd_growth,
    metric,
    open_fds,
    rss,
    wait_http,
    wait_until,
    zombies_under,
)

FLOOD = """\
import os, sys
total, width = int(sys.argv[1]), int(sys.argv[2])
if width:  # lines of `width` bytes, newline included
    chunk = (b"x" * (width - 1) + b"\\n") * max(1, 65536 // width)
else:      # one endless line: no newline at all
    chunk = b"y" * 65536
written = 0
while written < total:
    written += os.write(1, chunk[: total - written])
os.write(2, b"flood-done %d\\n" % written)
"""


def flood_config(tmp: Path, total: int, width: int) -> str:
    script = tmp / "flood.py"
    script.write_text(FLOOD)
    return f"""
        [programs.flood]
        command = ["{sys.executable}", "{script}", "{total}", "{width}"]
        oneshot = true
        autostart = false
        [programs.steady]
        command = ["sleep", "300"]
    """


def expected_lines(total: int, width: int) -> int:
    """What the init must emit for the flood's stdout: one event per line, or per 16 KiB piece."""
    from hive_init.runtime.output import MAX_LINE

    return -(-total // (width or MAX_LINE))  # a last partial line is kept too


def run_flood(start_counting_init, tmp_path, total: int, width: int, timeout: float, lossless: bool = True) -> dict:
    """`lossless`: every line reaches the reader. Otherwise every line is at least accounted for:
    delivered, or dropped and counted (a reader that falls behind for ~0.1 s in a 100 MB flood
    costs lines, by design)."""
    init = start_counting_init(flood_config(tmp_path, total, width), http=True)
    init.wait_state("steady", "READY")
    wait_http(init)
    pid = init.init_pid
    before = rss(pid)
    fds_before = open_fds(pid)
    sampler = Sampler(pid)
    poller = LivenessPoller(init.port)
    started = time.monotonic()
    assert init.ctl("start", "flood").returncode == 0
    flood = init.wait_state("flood", "EXITED", timeout=timeout)  # not blocked for good: it finished
    took = time.monotonic() - started
    answers = poller.stop()
    peak = sampler.stop()
    # every line reached our reader: nothing was dropped, nothing was cut short
    want = expected_lines(total, width)
    deadline, last, still_since = time.monotonic() + 60, -1, time.monotonic()
    while init.child_lines["flood"] < want + 1 and time.monotonic() < deadline:
        if init.child_lines["flood"] != last:
            last, still_since = init.child_lines["flood"], time.monotonic()
        elif time.monotonic() - still_since > 2:
            break  # nothing more is coming: some lines were dropped
        time.sleep(0.05)
    dropped = metric(init.port, "hive_log_lines_dropped_total")
    delivered = init.child_lines["flood"]
    assert flood["last_exit"] == 0
    if lossless:
        assert dropped == 0
        assert delivered == want + 1  # + "flood-done" on stderr
        assert any(b"flood-done %d" % total in line for line in init.child_stderr)
    else:
        assert delivered <= want + 1 <= delivered + dropped
    assert peak - before < 100 * MB, f"RSS grew by {(peak - before) / MB:.1f} MB"
    assert [a for a in answers if a[0] != 200] == [], answers
    assert answers  # each one 200 within the poller's own 5 s timeout (a timeout is recorded as its error)
    assert_no_fd_growth(pid, fds_before)
    assert init.program("steady")["restarts"] == 0
    assert init.stop() == 0
    result = {"took_s": round(took, 2), "rss_growth_mb": round((peak - before) / MB, 1),
              "livez_max_s": round(max(t for _, t in answers), 3), "lines": delivered, "dropped": dropped}
    print(f"flood of {total / MB:g} MB (width {width}): {result}")  # for SCENARIOS.md (pytest -s)
    return result


@pytest.mark.parametrize("width", [pytest.param(200, id="200-byte-lines"), pytest.param(0, id="without-newline")])
def test_a_10mb_flood_is_passed_through_whole_with_bounded_memory(start_counting_init, tmp_path, width):
    run_flood(start_counting_init, tmp_path, 10 * MB, width, timeout=120)


@pytest.mark.soak
def test_a_100mb_flood_of_short_lines_loses_nothing_when_the_reader_keeps_up(start_counting_init, tmp_path):
    run_flood(start_counting_init, tmp_path, 100 * MB, 100, timeout=600)


@pytest.mark.soak
def test_a_100mb_flood_without_newline_keeps_memory_bounded_and_every_line_accounted_for(start_counting_init,
                                                                                        tmp_path):
    # at ~100 MB/s the 8 MiB buffer covers a reader that stalls ~80 ms: on a busy machine ours may,
    # so lines may be dropped here, but never silently
    run_flood(start_counting_init, tmp_path, 100 * MB, 0, timeout=600, lossless=False)


def test_nobody_reading_stdout_drops_lines_but_never_blocks_the_init(start_counting_init, tmp_path):
    total = 100 * MB
    init = start_counting_init(flood_config(tmp_path, total, 200) + """
        [programs.later]
        command = ["sh", "-c", "echo later-is-up; exec sleep 300"]
        autostart = false
    """, http=True)
    init.wait_state("steady", "READY")
    wait_http(init)
    pid = init.init_pid
    before = rss(pid)
    sampler = Sampler(pid)
    init.pause()  # docker's log reader is stuck: the init's stdout pipe fills up and stays full
    poller = LivenessPoller(init.port)
    assert init.ctl("start", "flood").returncode == 0
    assert init.wait_state("flood", "EXITED", timeout=300)["last_exit"] == 0  # the flood still finished
    dropped = metric(init.port, "hive_log_lines_dropped_total")
    answers = poller.stop()
    peak = sampler.stop()
    assert dropped > 0
    print(f"stdout not read, {total / MB:g} MB flood: {dropped:.0f} lines dropped, RSS {(peak - before) / MB:+.1f} MB, "
          f"/livez max {max(t for _, t in answers):.3f}s")  # for SCENARIOS.md (pytest -s)
    assert [a for a in answers if a[0] != 200] == [], answers
    assert peak - before < 100 * MB, f"RSS grew by {(peak - before) / MB:.1f} MB"
    # the control socket kept working without stdout: an operator can still act
    assert init.ctl("start", "later").returncode == 0
    init.wait_state("later", "READY")
    assert metric(init.port, "hive_log_lines_dropped_total") >= dropped
    # the reader comes back: what was buffered, then new lines, flow again (later's "spawned" was
    # written while the buffer was full: it may be among the dropped lines, which is the design)
    init.resume()
    assert init.ctl("stop", "later").returncode == 0
    init.wait_for(lambda e: e.get("target") == "later" and e.get("msg", "").startswith("stopped"), timeout=30,
                  what="later's stop after the reader came back")
    assert init.stop() == 0
    assert init.child_lines["flood"] < total // 200  # some were dropped, and counted


ORPHANS = """\
import os, sys
n = int(sys.argv[1])
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:   # the grandchild outlives its parent: an orphan the init must reap
            os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)
print("made %d orphans" % n, flush=True)
"""


def churn(start_counting_init, tmp_path, orphans: int, restarts: int) -> None:
    """`orphans` reparented grandchildren, then `restarts` restarts of a program that exits at once:
    the init's descriptors are the same before and after, its memory about the same."""
    script = tmp_path / "orphans.py"
    script.write_text(ORPHANS)
    init = start_counting_init(f"""
        [programs.orphans]
        command = ["{sys.executable}", "{script}", "{orphans}"]
        oneshot = true
        autostart = false
        [programs.blink]
        command = ["sh", "-c", "echo blink"]
        max_restarts = -1
        autostart = false
        backoff = {{ initial = "1ms", max = "1ms", factor = 1 }}
        [programs.steady]
        command = ["sleep", "300"]
    """)
    init.wait_state("steady", "READY")
    pid = init.init_pid
    fds_before = open_fds(pid)
    before = rss(pid)
    assert init.ctl("start", "orphans").returncode == 0
    init.wait_state("orphans", "EXITED", timeout=600)
    status = wait_reaped(init, orphans)
    assert status["orphans_reaped"] >= orphans
    assert_no_fd_growth(pid, fds_before)
    after_orphans = rss(pid)
    assert after_orphans - before < 30 * MB, f"RSS grew by {(after_orphans - before) / MB:.1f} MB"
    if restarts:
        assert init.ctl("start", "blink").returncode == 0

        def restarted() -> bool:
            assert init.proc.poll() is None, "the init died during the restart loop:\n" + "\n".join(init.raw[-5:])
            return init.program("blink")["restarts"] >= restarts

        wait_until(restarted, restarts * 0.2 + 60, f"{restarts} restarts of blink", interval=0.2)
        assert init.ctl("stop", "blink").returncode == 0
        assert init.child_lines["blink"] >= restarts
        assert_no_fd_growth(pid, fds_before)
        after = rss(pid)
        assert after - before < 30 * MB, f"RSS grew by {(after - before) / MB:.1f} MB"
    assert zombies_under(pid) == []
    assert init.program("steady")["restarts"] == 0
    print(f"churn: {status['orphans_reaped']} orphans, {restarts} restarts, RSS {(rss(pid) - before) / MB:+.1f} MB, "
          f"fds {len(fds_before)} -> {len(open_fds(pid))}")  # for SCENARIOS.md (pytest -s)
    assert init.stop() == 0


def wait_reaped(init, orphans: int) -> dict:
    try:
        wait_until(lambda: init.status()["orphans_reaped"] >= orphans, 20, f"{orphans} orphans reaped")
    except AssertionError:
        pass  # the caller's assertion says how many were
    return init.status()


def test_1000_orphans_and_200_restarts_leak_nothing(start_counting_init, tmp_path):
    churn(start_counting_init, tmp_path, orphans=1000, restarts=200)


@pytest.mark.soak
def test_10000_orphans_and_10000_restarts_leak_nothing(start_counting_init, tmp_path):
    churn(start_counting_init, tmp_path, orphans=10_000, restarts=10_000)
