"""/metrics in the Prometheus text format. prometheus_client and psutil are imported on the first
scrape, not at start: an init that nobody scrapes never pays for them."""

import os
from typing import TYPE_CHECKING, Any

from hive_init.health.probes import BUCKETS
from hive_init.runtime.state import State

if TYPE_CHECKING:
    from hive_init.runtime.supervisor import SupervisorView

_registry: Any = None


def render(supervisor: "SupervisorView") -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    global _registry
    if _registry is None:
        from prometheus_client import CollectorRegistry

        _registry = CollectorRegistry(auto_describe=False)
        _registry.register(_Collector(supervisor))
    return generate_latest(_registry), CONTENT_TYPE_LATEST


class _Collector:
    """Reads the supervisor's state at scrape time; nothing is updated on the init's hot paths."""

    def __init__(self, supervisor: "SupervisorView"):
        import psutil

        self.supervisor = supervisor
        self.process = psutil.Process(os.getpid())

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        sup = self.supervisor
        up = GaugeMetricFamily("hive_program_up", "1 when the program's process is running", labels=["program"])
        ready = GaugeMetricFamily("hive_program_ready", "1 when the program is READY", labels=["program"])
        state = GaugeMetricFamily("hive_program_state", "1 for the program's current state", labels=["program", "state"])
        restarts = CounterMetricFamily("hive_program_restarts", "restarts since hive-init started", labels=["program"])
        uptime = GaugeMetricFamily("hive_program_uptime_seconds", "seconds since the process started", labels=["program"])
        probe = HistogramMetricFamily("hive_probe_duration_seconds", "probe durations", labels=["program", "probe"])
        failures = CounterMetricFamily("hive_probe_failures", "failed probes", labels=["program", "probe"])
        for p in sup.programs.values():
            up.add_metric([p.name], 1 if p.pid else 0)
            ready.add_metric([p.name], 1 if p.ready else 0)
            for s in State:
                state.add_metric([p.name, s.value], 1 if p.state is s else 0)
            restarts.add_metric([p.name], p.tracker.restarts_total)
            uptime.add_metric([p.name], p.uptime() or 0)
            for kind, stats in p.probe_stats.items():
                if stats.count:
                    cumulative, buckets = 0, []
                    for bound, count in zip(BUCKETS, stats.counts):
                        cumulative += count
                        buckets.append((repr(bound), cumulative))
                    buckets.append(("+Inf", stats.count))
                    probe.add_metric([p.name, kind], buckets, stats.sum)
                    failures.add_metric([p.name, kind], stats.failures)
        yield from (up, ready, state, restarts, uptime, probe, failures)
        reaped = CounterMetricFamily("hive_zombies_reaped", "processes reaped by hive-init, orphans included")
        reaped.add_metric([], sup.reaper.reaped_total)
        yield reaped
        orphans = CounterMetricFamily("hive_orphans_reaped", "reparented orphans reaped by hive-init")
        orphans.add_metric([], sup.reaper.orphans_reaped)
        yield orphans
        ready_all = GaugeMetricFamily("hive_ready", "1 when every program that should be up is READY")
        ready_all.add_metric([], 1 if sup.ready()[0] else 0)
        yield ready_all
        with self.process.oneshot():
            memory = self.process.memory_info()
            cpu = self.process.cpu_times()
        rss = GaugeMetricFamily("hive_init_resident_memory_bytes", "the init's own resident memory")
        rss.add_metric([], memory.rss)
        yield rss
        cpu_total = CounterMetricFamily("hive_init_cpu_seconds", "the init's own CPU time (user + system)")
        cpu_total.add_metric([], cpu.user + cpu.system)
        yield cpu_total
        start = GaugeMetricFamily("hive_init_start_time_seconds", "unix time hive-init started")
        start.add_metric([], sup.started_at)
        yield start
        dropped = CounterMetricFamily("hive_log_lines_dropped", "lines dropped because stdout could not keep up")
        from hive_init import log

        dropped.add_metric([], log.sink.dropped_lines)
        yield dropped
