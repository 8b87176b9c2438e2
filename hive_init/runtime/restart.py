"""The restart policy: after a program exits, run it again (and after how long), or stop trying.

Pure bookkeeping, no I/O, so it can be tested on its own: exponential backoff that resets once
a program has stayed up `backoff.reset_after`, and at most `max_restarts` restarts within any
`restart_window`, past which the program is FATAL.
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
        self.failures_in_a_row = 0
        self.restart_times: deque[float] = deque()
        self.restarts_total = 0

    def succeeded(self, code: int) -> bool:
        return code in self.spec.exit_codes

    def after_exit(self, code: int, uptime: float, now: float) -> Decision:
        spec = self.spec
        success = self.succeeded(code)
        if spec.oneshot and success:
            return Decision("done", reason="completed")
        wanted = spec.restart == "always" or (spec.restart == "on-failure" and not success)
        if not wanted:
            return Decision("done" if success else "failed", reason="restart policy is " + spec.restart)
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
        self.restart_times.clear()
