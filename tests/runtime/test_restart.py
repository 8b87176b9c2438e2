"""RestartTracker on its own: pure bookkeeping, no processes. Each case is a sequence of exits
(exit status, how long the process had been up) at given times, and what the tracker decides."""

from dataclasses import replace

import pytest

from hive_init.config.model import Backoff, ProgramSpec
from hive_init.runtime.restart import RestartTracker

BASE = ProgramSpec(name="w", command=("w",), backoff=Backoff(initial=1.0, max=1.0, factor=1.0))
# supervisord's own defaults as hive-init fields: startsecs=1, startretries=3, no crash-loop window
SUPERVISORD = replace(BASE, start_seconds=1.0, start_retries=3, max_restarts=-1, restart="on-failure")


def run(spec: ProgramSpec, exits: list[tuple[int, float]], gap: float = 0.0) -> list[str]:
    """The verdicts, the tracker told of each exit in turn; `restarting` follows each restart."""
    tracker = RestartTracker(spec)
    now, verdicts = 0.0, []
    for code, uptime in exits:
        now += uptime + gap
        decision = tracker.after_exit(code, uptime, now)
        verdicts.append(decision.verdict)
        if decision.verdict != "restart":
            break
        now += decision.delay
        tracker.restarting(now)
    return verdicts


def test_supervisord_never_gives_up_on_a_program_that_started():
    # a queue worker that crashes every 3 s for 45 s: each run outlived startsecs, so it is
    # restarted every time (supervisord: 104 starts of 8 workers in 45 s)
    assert run(SUPERVISORD, [(1, 3.0)] * 15) == ["restart"] * 15


def test_supervisord_startretries_counts_failed_starts_in_a_row():
    # startretries=3: the first start and 3 retries fail, then FATAL
    assert run(SUPERVISORD, [(1, 0.2)] * 5) == ["restart", "restart", "restart", "fatal"]


def test_a_start_that_took_resets_the_failed_starts():
    exits = [(1, 0.2), (1, 0.2), (1, 0.2), (1, 5.0), (1, 0.2), (1, 0.2), (1, 0.2), (1, 0.2)]
    assert run(SUPERVISORD, exits) == ["restart"] * 7 + ["fatal"]


def test_a_failed_start_is_retried_even_with_restart_never():
    # supervisord retries a process that exits within startsecs whatever autorestart says
    spec = replace(SUPERVISORD, restart="never")
    assert run(spec, [(0, 0.1), (0, 0.1), (0, 2.0)]) == ["restart", "restart", "done"]
    assert run(spec, [(1, 0.1), (1, 2.0)]) == ["restart", "failed"]


def test_a_success_within_start_seconds_is_a_failed_start():
    assert run(SUPERVISORD, [(0, 0.1)] * 4) == ["restart", "restart", "restart", "fatal"]


def test_start_retries_zero_gives_one_attempt():
    assert run(replace(SUPERVISORD, start_retries=0), [(1, 0.1)]) == ["fatal"]


def test_hive_init_default_is_the_crash_loop_window():
    # the default: no failed-start budget, at most 5 restarts within 60 s however long each run was
    assert BASE.start_retries == -1 and BASE.max_restarts == 5
    assert run(BASE, [(1, 3.0)] * 7) == ["restart"] * 5 + ["fatal"]


def test_the_window_forgets_restarts_older_than_it():
    spec = replace(BASE, max_restarts=2, restart_window=10.0)
    # one crash every 6 s: never more than 2 restarts within 10 s
    assert run(spec, [(1, 5.0)] * 8) == ["restart"] * 8


def test_both_budgets_at_once_whichever_is_spent_first():
    spec = replace(SUPERVISORD, max_restarts=4, restart_window=60.0)
    assert run(spec, [(1, 3.0)] * 6) == ["restart"] * 4 + ["fatal"]
    assert run(spec, [(1, 0.1)] * 6) == ["restart"] * 3 + ["fatal"]


def test_fatal_reason_names_the_budget():
    tracker = RestartTracker(replace(SUPERVISORD, start_retries=0))
    reason = tracker.after_exit(1, 0.1, 1.0).reason
    assert "1 failed starts in a row" in reason and "start_retries = 0" in reason
    tracker = RestartTracker(replace(BASE, max_restarts=0))
    assert "max_restarts = 0" in tracker.after_exit(1, 5.0, 1.0).reason


def test_an_operator_start_forgets_the_failures():
    tracker = RestartTracker(SUPERVISORD)
    for t in range(3):
        assert tracker.after_exit(1, 0.1, float(t)).verdict == "restart"
    tracker.reset()
    assert tracker.after_exit(1, 0.1, 10.0).verdict == "restart"


def test_oneshots_have_no_failed_start_budget():
    spec = replace(BASE, oneshot=True, restart="on-failure", start_retries=-1)
    assert run(spec, [(0, 0.01)]) == ["done"]


@pytest.mark.parametrize("uptime, delay", [(0.1, 2.0), (20.0, 1.0)])
def test_backoff_resets_after_a_long_run(uptime, delay):
    spec = replace(BASE, max_restarts=-1, backoff=Backoff(initial=1.0, max=30.0, factor=2.0, reset_after=10.0))
    tracker = RestartTracker(spec)
    assert tracker.after_exit(1, 0.1, 0.0).delay == 1.0
    assert tracker.after_exit(1, uptime, 1.0).delay == delay
