"""Per-program resources and OOM protection through the real init: the figures of status --json
and /metrics against psutil's reading of the same process tree, MEM and CPU% in the status
table, a program that grows past its memory_limit restarted with a reason that says so, the
oom_score_adj order as root without CAP_SYS_RESOURCE, and a real OOM kill in a memory cgroup
(v1, created for the test) reported as such."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from hive_init import procfs
from hive_init.runtime import oom
from tests.helpers import Init, needs_root

# A tree of three processes: the main one holds 30 MB, each of its two children 10 MB more of
# its own, and all of them share what the main one allocated before the fork.
TREE = """
import os, sys, time
held = bytearray(30 << 20)
for _ in range(2):
    if os.fork() == 0:
        mine = bytearray(10 << 20)
        open(sys.argv[1] + "." + str(os.getpid()), "w").close()
        time.sleep(3600)
while len([f for f in os.listdir(os.path.dirname(sys.argv[1])) if f.startswith(os.path.basename(sys.argv[1]) + ".")]) < 2:
    time.sleep(0.01)
open(sys.argv[1], "w").close()
time.sleep(3600)
"""

# grows by 8 MB every 50 ms up to 400 MB, touching every page (bytearray zero-fills)
GROW = """
import time
chunks = []
for _ in range(50):
    chunks.append(bytearray(8 << 20))
    time.sleep(0.05)
time.sleep(3600)
"""


def psutil_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def wait_until(predicate, timeout: float = 20, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def metrics(init) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{init.port}/metrics", timeout=10) as r:
        return r.read().decode()


def sample(text: str, name: str, program: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{program="{program}"}} '):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for {program} in\n{text}")


# ---- the reader ---------------------------------------------------------------------------------
def test_stat_with_a_hostile_command_name_is_parsed_from_the_last_parenthesis(tmp_path):
    """A process may name itself anything, ')' and spaces included; the fields after it still parse."""
    name = "x) (y z"
    link = tmp_path / name
    link.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(link), "30"])
    try:
        stat = wait_until(lambda: (s := procfs.read_stat(proc.pid)) and s.comm == name and s.state == "S" and s,
                          what="the exec, then its sleep")
        assert stat.ppid == os.getpid()
        assert stat.pgrp == os.getpgrp() and stat.session == os.getsid(0)
        # stat's RSS and statm's (psutil's) are the kernel's approximate per-CPU counters
        assert abs(procfs.read_stat(proc.pid).rss - psutil.Process(proc.pid).memory_info().rss) < 1 << 20
        rss, pss = procfs.rollup(proc.pid)
        full = psutil.Process(proc.pid).memory_full_info()
        assert pss == full.pss and abs(rss - full.rss) < 1 << 20
    finally:
        proc.kill()
        proc.wait()


def test_who_a_process_is_and_whether_it_still_runs(tmp_path):
    """Its owner, arguments and working directory as the kernel gives them; a zombie does not
    run; a reaped process has nothing left to read."""
    proc = subprocess.Popen(["/bin/sleep", "30"], cwd=tmp_path)
    try:
        wait_until(lambda: procfs.cmdline(proc.pid) == ("/bin/sleep", "30"), what="the exec")
        assert procfs.running(proc.pid) and proc.pid in set(procfs.pids())
        assert procfs.owner(proc.pid) == os.geteuid()
        assert procfs.cwd(proc.pid) == os.path.realpath(tmp_path)
        assert procfs.environ(proc.pid) is not None
        proc.kill()
        wait_until(lambda: (s := procfs.read_stat(proc.pid)) and s.state == "Z", what="the zombie")
        assert not procfs.running(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not procfs.running(proc.pid)
    assert procfs.owner(proc.pid) is None and procfs.cmdline(proc.pid) is None and procfs.cwd(proc.pid) is None


def test_cgroup_lookup_for_v1_v2_and_a_container_namespace(tmp_path):
    (tmp_path / "memory" / "grp").mkdir(parents=True)
    (tmp_path / "memory" / "grp" / "memory.limit_in_bytes").write_text("67108864\n")
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    v1 = b"4:memory:/grp\n0::/\n"
    assert procfs.cgroup_dir(v1, str(tmp_path)) == (1, str(tmp_path / "memory" / "grp"))
    # inside a container the path seen is the host's, and the mount is the container's own cgroup
    assert procfs.cgroup_dir(b"4:memory:/docker/abc\n", str(tmp_path)) == (1, str(tmp_path / "memory"))
    v2root = tmp_path / "v2"
    (v2root / "app").mkdir(parents=True)
    (v2root / "cgroup.controllers").write_text("memory\n")
    (v2root / "app" / "memory.current").write_text("1000\n")
    (v2root / "app" / "memory.max").write_text("max\n")
    (v2root / "app" / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    where = procfs.cgroup_dir(b"0::/app\n", str(v2root))
    assert where == (2, str(v2root / "app"))
    reading = procfs.cgroup_memory(where)
    assert reading.limit is None and reading.usage == 1000 and reading.oom_kills == 1 and reading.events["max"] == 3
    assert procfs.cgroup_memory((1, str(tmp_path / "memory" / "grp"))).limit == 64 << 20


# ---- the figures ------------------------------------------------------------------------------------
def test_status_figures_match_psutil_over_the_same_tree(start_init, tmp_path):
    marker = tmp_path / "allocated"
    init = start_init(f"""
        [programs.tree]
        command = {json.dumps([sys.executable, "-c", TREE, str(marker)])}
        [programs.tree.readiness]
        exec = ["test", "-e", "{marker}"]
        period = "100ms"
        """, http=True)
    init.wait_state("tree", "READY")
    shown = init.program("tree")
    tree = psutil_tree(shown["pid"])
    assert shown["processes"] == len(tree) == 3
    rss = sum(p.memory_info().rss for p in tree)
    pss = sum(p.memory_full_info().pss for p in tree)
    fds = sum(p.num_fds() for p in tree)
    cpu = sum(sum(p.cpu_times()[:4]) for p in tree)
    mib = 1 << 20
    # the processes sleep: only the interpreter's own few pages may move between the two reads
    assert abs(shown["rss_bytes"] - rss) < 2 * mib, (shown, rss)
    assert abs(shown["pss_bytes"] - pss) < 2 * mib, (shown, pss)
    assert shown["memory_bytes"] == shown["pss_bytes"] and shown["memory_source"] == "pss"
    # what was allocated before the fork is shared: PSS counts it once, the RSS sum three times
    assert 45 * mib < shown["pss_bytes"] < 75 * mib < shown["rss_bytes"]
    assert shown["fds"] == fds
    assert abs(shown["cpu_seconds"] - cpu) < 0.1
    scraped = metrics(init)
    assert abs(sample(scraped, "hive_program_memory_bytes", "tree") - pss) < 2 * mib
    assert sample(scraped, "hive_program_processes", "tree") == 3
    assert sample(scraped, "hive_program_open_fds", "tree") == fds
    assert abs(sample(scraped, "hive_program_cpu_seconds_total", "tree") - cpu) < 0.1
    assert "hive_container_memory_usage_bytes" in scraped
    check_metrics(scraped)


def check_metrics(text: str) -> None:
    """`promtool check metrics` (Debian's prometheus package) where it is installed, else
    prometheus_client's own parser, which reads what Prometheus would."""
    import shutil

    promtool = shutil.which("promtool")
    if promtool:
        out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr
        return
    from prometheus_client.parser import text_string_to_metric_families

    assert {f.name for f in text_string_to_metric_families(text)} >= {
        "hive_program_memory_bytes", "hive_program_cpu_seconds", "hive_program_processes", "hive_program_open_fds"}


def test_status_table_shows_mem_and_cpu(start_init):
    init = start_init(f"""
        [programs.busy]
        command = {json.dumps([sys.executable, "-c", "while True: pass"])}
        [programs.idle]
        command = ["sleep", "3600"]
        """)
    init.wait_state("busy", "READY")
    init.wait_state("idle", "READY")
    out = init.ctl("status")
    header, *rows = out.stdout.splitlines()
    assert header.split()[:8] == ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "READY", "MEM", "CPU%"]
    cells = {row.split()[0]: row.split() for row in rows}
    assert cells["busy"][6].endswith("M") and cells["idle"][6].endswith("M")
    # the first reading is the average since the start; the next, over the time between the two
    # a reading becomes the next one's starting point only when it comes 1 s (CPU_WINDOW_MIN) or
    # more after the previous one: these sleeps are that window, not a synchronisation
    time.sleep(1.1)
    first = init.program("busy")
    time.sleep(1.1)
    second = init.program("busy")
    between = 100 * (second["cpu_seconds"] - first["cpu_seconds"]) / (second["uptime"] - first["uptime"])
    assert abs(second["cpu_percent"] - between) < 5, (first, second, between)
    assert second["cpu_percent"] > init.program("idle")["cpu_percent"]
    cells = {row.split()[0]: row.split() for row in init.ctl("status").stdout.splitlines()[1:]}
    assert float(cells["idle"][7]) < 5 and float(cells["busy"][7]) >= 0


# ---- memory_limit --------------------------------------------------------------------------------------
def test_a_program_past_its_memory_limit_is_restarted_and_says_why(start_init):
    init = start_init(f"""
        [programs.leaky]
        command = {json.dumps([sys.executable, "-c", GROW])}
        memory_limit = "100MB"
        memory_limit_for = "1s"
        stop_timeout = "2s"
        [programs.leaky.backoff]
        initial = "100ms"
        """, http=True)
    event = init.wait_msg("above memory_limit 100MiB for 1s", program="leaky", timeout=30)
    assert event["level"] == "warning"
    backoff = init.wait_for(lambda e: e.get("target") == "leaky" and e.get("msg", "").startswith("backoff:"), 20)
    assert "above memory_limit 100MiB" in backoff["msg"] and "restarting in" in backoff["msg"]
    shown = wait_until(lambda: (p := init.program("leaky"))["restarts"] >= 1 and p, what="the restart")
    assert shown["memory_limit"] == 100 << 20 and shown["memory_limit_restarts"] >= 1
    assert sample(metrics(init), "hive_program_memory_limit_restarts_total", "leaky") >= 1


def test_memory_limit_needs_no_reading_below_it(start_init):
    """A program under its limit is never restarted by it, however often it is read."""
    init = start_init(f"""
        [programs.steady]
        command = {json.dumps([sys.executable, "-c", "import time; b = bytearray(20 << 20); time.sleep(3600)"])}
        memory_limit = "200MB"
        memory_limit_for = "500ms"
        """)
    pid = init.wait_state("steady", "READY")["pid"]
    for _ in range(5):
        assert init.program("steady")["pid"] == pid
    assert not [e for e in init.events("steady") if "memory_limit" in e.get("msg", "")]


# ---- oom_score_adj ------------------------------------------------------------------------------------------
def test_oom_scores_keep_their_order_without_cap_sys_resource(start_init):
    if oom.lowering_permitted():
        pytest.skip("this process may lower oom_score_adj (CAP_SYS_RESOURCE): the shift is not needed here")
    init = start_init(f"""
        [programs.db]
        command = {json.dumps([sys.executable, "-c", "import os, time; os.fork(); time.sleep(3600)"])}
        oom_score_adj = -900
        [programs.plain]
        command = ["sleep", "3600"]
        [programs.api]
        command = ["sleep", "3600"]
        oom_score_adj = 500
        """)
    scores = {}
    for name in ("db", "plain", "api"):
        pid = init.wait_state(name, "READY")["pid"]
        scores[name] = [p.pid for p in psutil_tree(pid)]
    read = {name: [procfs.read_oom_score_adj(pid) for pid in pids] for name, pids in scores.items()}
    # -900..1000 mapped onto 0..1000: the most protected at 0, the order kept (its child inherits)
    assert read == {"db": [0, 0], "plain": [474], "api": [737]}, read
    said = [e for e in init.events() if "cannot lower oom_score_adj" in e.get("msg", "")]
    assert len(said) == 1 and said[0]["scores"] == "db=0,plain=474,api=737", said
    assert [init.program(n)["oom_score_adj"] for n in ("db", "plain", "api")] == [0, 474, 737]


@needs_root
def test_a_real_oom_kill_in_a_memory_cgroup_is_reported_as_such(tmp_path):
    """cgroup v1 here: a memory cgroup made for the test with a 96 MB limit, the init inside it,
    a program that allocates past it. The kernel kills it; the init says so in the log, in
    status and in /metrics, and restarts it."""
    base = Path("/sys/fs/cgroup/memory")
    if not (base / "cgroup.procs").exists() or not os.access(base, os.W_OK):
        pytest.skip("no writable cgroup v1 memory hierarchy at /sys/fs/cgroup/memory (cgroup v2 only, or not root)")
    group = base / f"hive-test-oom-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(96 << 20))
        if (group / "memory.memsw.limit_in_bytes").exists():
            (group / "memory.memsw.limit_in_bytes").write_text(str(96 << 20))  # no escape into swap
        join = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh"]
        init = Init(tmp_path, f"""
            [programs.hog]
            command = {json.dumps([sys.executable, "-c", GROW])}
            oom_score_adj = 1000
            [programs.hog.backoff]
            initial = "5s"
            [programs.quiet]
            command = ["sleep", "3600"]
            """, http=True, prefix=join)
        try:
            event = init.wait_for(lambda e: e.get("target") == "hog" and "killed by the OOM killer" in e.get("msg", ""), 60,
                                  what="the OOM kill")
            assert event["msg"].startswith("backoff: killed by the OOM killer (SIGKILL; the container's memory cgroup's")
            hog = init.program("hog")
            assert hog["oom_kills"] == 1 and "OOM killer" in hog["reason"]
            assert init.program("quiet")["state"] == "READY"
            scraped = metrics(init)
            assert sample(scraped, "hive_program_oom_kills_total", "hog") == 1
            assert sample(scraped, "hive_program_oom_kills_total", "quiet") == 0
            container = {line.split()[0]: float(line.split()[1]) for line in scraped.splitlines()
                         if line.startswith("hive_container_")}
            assert container["hive_container_oom_kills_total"] == 1
            assert container["hive_container_memory_limit_bytes"] == 96 << 20
        finally:
            init.close()
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not (group / "cgroup.procs").read_text().split(), 10, "the cgroup to empty")
        group.rmdir()


# ---- the shipped configs -------------------------------------------------------------------------
@pytest.mark.parametrize("service", ["genie", "agent"])
def test_shipped_configs_put_the_api_before_postgres_and_leave_postgres_its_share(service):
    import tomllib

    from hive_init.config.fields import parse_size

    with open(Path(__file__).resolve().parents[2] / "configs" / f"{service}.toml", "rb") as f:
        programs = tomllib.load(f)["programs"]
    pg, api = programs["postgres"], programs["api"]
    assert api["oom_score_adj"] > 0 > pg.get("oom_score_adj", oom.DEFAULT_SCORES["postgres"])
    container = 512 << 20  # the limit of the compose files and Kubernetes manifests
    left = container - parse_size(api["memory_limit"])
    # PostgreSQL's shared memory, one work_mem for a few busy backends, and room for the init
    assert left >= parse_size(pg["settings"]["shared_buffers"]) + 10 * parse_size(pg["settings"]["work_mem"]) + (64 << 20)
