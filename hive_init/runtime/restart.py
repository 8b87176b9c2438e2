"""The restart policy: after a program exits, run it again (and after how long), or stop trying.

Pure bookkeeping, no I/O, so it can be tested on its own. Two budgets, each of which can be
turned off, so that both supervisord's semantics and hive-init's crash-loop protection can be
written (the README's "Restart budget"):

- failed starts (supervisord's startsecs/startretries): a process that exits sooner than
  `start_seconds` did not start; after `start_retries` such failures in a row it is FATAL. A
  failed start is retried whatever `restart` says (as supervisord's BACKOFF is), and a process
  that stayed up `start_seconds` starts the count over. `start_retries = -1`: no such budget.
- the crash-loop window: at most `max_restarts` restarts within any `restart_window`, however
  long each run lasted. `max_restarts = -1`: no window.

The delay before a restart is an exponential backoff that resets once a program has stayed up
`backoff.reset_after`.
"""

from collections import deque
from dataclasses import dataclass
from typing import Literal

from hive_init.config.model import ProgramSpec

Verdict = Literal["restart", "done", "failed", "fatal"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict  # restart: after `delay`; done: ended as it should; failed: ended badly, no restart; fatal: gave up
    delay: float = 0.0
    reason: str = ""


class RestartTracker:
    def __init__(self, spec: ProgramSpec):
        self.spec = spec
        self.failures_in_a_row = 0  # the backoff's exponent
        self.failed_starts = 0  # exits sooner than start_seconds, in a row
        self.restart_times: deque[float] = deque()
        self.restarts_total = 0

    def succeeded(self, code: int) -> bool:
        return code in self.spec.exit_codes

    def _counts_starts(self) -> bool:
        return self.spec.start_retries >= 0 and not self.spec.oneshot

    def after_exit(self, code: int, uptime: float, now: float) -> Decision:
        spec = self.spec
        success = self.succeeded(code)
        if spec.oneshot and success:
            return Decision("done", reason="completed")
        failed_start = self._counts_starts() and uptime < spec.start_seconds
        if self._counts_starts():
            self.failed_starts = self.failed_starts + 1 if failed_start else 0
        wanted = failed_start or spec.restart == "always" or (spec.restart == "on-failure" and not success)
        if not wanted:
            return Decision("done" if success else "failed", reason="restart policy is " + spec.restart)
        if failed_start and self.failed_starts > spec.start_retries:
            return Decision("fatal", reason=f"{self.failed_starts} failed starts in a row: each exited within "
                                           f"{spec.start_seconds:g}s (start_retries = {spec.start_retries})")
        if uptime >= spec.backoff.reset_after:
            self.failures_in_a_row = 0
        while self.restart_times and now - self.restart_times[0] > spec.restart_window:
            self.restart_times.popleft()
        if spec.max_restarts >= 0 and len(self.restart_times) >= spec.max_restarts:
            return Decision("fatal", reason=f"{len(self.restart_times)} restarts within {spec.restart_window:g}s "
                                           f"(max_restarts = {spec.max_restarts})")
        delay = min(spec.backoff.initial * spec.backoff.factor ** self.failures_in_a_row, spec.backoff.max)
        if delay < spec.backoff.max:  # past the cap the exponent stops growing (and cannot overflow)
            self.failures_in_a_row += 1
        return Decision("restart", delay=delay)

    def restarting(self, now: float) -> None:
        self.restart_times.append(now)
        self.restarts_total += 1

    def reset(self) -> None:
        """An operator started the program by hand: the count starts over."""
        self.failures_in_a_row = 0
        self.failed_starts = 0
        self.restart_times.clear()
