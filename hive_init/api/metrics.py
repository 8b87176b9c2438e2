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


def _resources(sup: "SupervisorView") -> Any:
    """What each program's tree uses (read just before this scrape, hive_init.runtime.resources)
    and the container's memory cgroup."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from hive_init.runtime import oom, resources

    label = ["program"]
    memory = GaugeMetricFamily("hive_program_memory_bytes", "memory of the program's whole process tree: "
                               "the PSS sum, or the RSS sum where PSS cannot be read (status --json says which)",
                               labels=label)
    rss = GaugeMetricFamily("hive_program_rss_bytes", "RSS sum of the program's process tree (shared pages counted "
                            "once per process)", labels=label)
    cpu = CounterMetricFamily("hive_program_cpu_seconds", "CPU time (user + system) of the program's process tree, "
                              "reaped children included", labels=label)
    processes = GaugeMetricFamily("hive_program_processes", "processes in the program's tree", labels=label)
    fds = GaugeMetricFamily("hive_program_open_fds", "descriptors open in the program's tree", labels=label)
    limit = GaugeMetricFamily("hive_program_memory_limit_bytes", "the program's memory_limit", labels=label)
    limit_restarts = CounterMetricFamily("hive_program_memory_limit_restarts", "restarts because the tree stayed "
                                         "above memory_limit", labels=label)
    oom_kills = CounterMetricFamily("hive_program_oom_kills", "times the OOM killer killed the program's main process",
                                    labels=label)
    score = GaugeMetricFamily("hive_program_oom_score_adj", "oom_score_adj given to the program", labels=label)
    for p in sup.programs.values():
        d = resources.describe(p)
        if d["memory_bytes"] is not None:
            memory.add_metric([p.name], d["memory_bytes"])
            rss.add_metric([p.name], d["rss_bytes"])
            cpu.add_metric([p.name], d["cpu_seconds"])
            processes.add_metric([p.name], d["processes"])
            if d["fds"] is not None:
                fds.add_metric([p.name], d["fds"])
        if d["memory_limit"] is not None:
            limit.add_metric([p.name], d["memory_limit"])
        limit_restarts.add_metric([p.name], d["memory_limit_restarts"])
        oom_kills.add_metric([p.name], d["oom_kills"])
        score.add_metric([p.name], oom.effective(p.spec))
    yield from (memory, rss, cpu, processes, fds, limit, limit_restarts, oom_kills, score)
    cg = resources.container_reading()
    if cg is None:
        return
    if cg.limit is not None:
        c_limit = GaugeMetricFamily("hive_container_memory_limit_bytes", "the container's memory limit (cgroup "
                                    "memory.max, v1 memory.limit_in_bytes)")
        c_limit.add_metric([], cg.limit)
        yield c_limit
    if cg.usage is not None:
        c_usage = GaugeMetricFamily("hive_container_memory_usage_bytes", "memory charged to the container (cgroup "
                                    "memory.current, v1 memory.usage_in_bytes; page cache included)")
        c_usage.add_metric([], cg.usage)
        yield c_usage
    if cg.oom_kills is not None:
        c_oom = CounterMetricFamily("hive_container_oom_kills", "processes the OOM killer killed in the container "
                                    "(cgroup memory.events oom_kill, v1 memory.oom_control oom_kill)")
        c_oom.add_metric([], cg.oom_kills)
        yield c_oom
    if cg.version == 2 and cg.events:
        events = CounterMetricFamily("hive_container_memory_events", "the cgroup's memory.events counters",
                                     labels=["event"])
        for name, value in sorted(cg.events.items()):
            events.add_metric([name], value)
        yield events


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
        yield from _resources(sup)
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
