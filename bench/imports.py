"""The RSS each import costs a running hive-init, every container, all its life.

1. Which modules a running init holds: `python -X importtime -m hive_init run` on a config with
   the health endpoint, a plain program and a postgres program (autostart = false: its kind is
   loaded, the server is not started), after one /health request and one control request.
2. A fresh interpreter imports exactly those modules in that order (importtime lists a module
   after its own imports, so each import then loads that module alone) and reads its VmRSS after
   each one; a group (a third-party package, a hive_init subpackage, a stdlib package) is charged
   the growth of its own modules.
3. Full mode: the main third-party packages alone in a fresh interpreter each, as a cross-check.
"""

import os
import subprocess
import sys
import time

from bench.common import HIVE_INIT, PYTHON, BenchError, child_env, free_port, http_status, subdir, wait_for
from bench.sides import Program, hive_config

_MEASURE = r"""
import sys
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
names = open(sys.argv[1]).read().split()
print("baseline", rss(), 1, flush=True)
# importtime lists a module when its import completes: after its own imports, but a package's
# submodules come before the package (its __init__ imports them). A module is imported once its
# parent package is; until then it waits, and usually the parent's own import brings it in.
pending = []
def parent_loaded(name):
    parent = name.rpartition(".")[0]
    return not parent or parent in sys.modules
def one(name):
    try:
        __import__(name)
        ok = 1
    except BaseException:
        ok = 0
    print(name, rss(), ok, flush=True)
for name in names:
    pending.append(name)
    progress = True
    while progress:
        progress = False
        for waiting in list(pending):
            if waiting in sys.modules:
                pending.remove(waiting)
            elif parent_loaded(waiting):
                pending.remove(waiting)
                one(waiting)
                progress = True
for name in pending:
    if name not in sys.modules:
        one(name)
"""

LAZY = ("psutil", "prometheus_client")
# the third-party packages a running init holds (uvicorn is the app's, not the init's: h11 serves its endpoint)
ALONE = ("anyio", "h11", "structlog", "asyncpg", "psutil", "prometheus_client")


def modules_of_running_init(root: str) -> list[str]:
    d = subdir(root, "imports")
    http_port = free_port()
    programs = [
        Program("sleeper", ["sleep", "infinity"]),
        Program("postgres", None, hive_extra=f"""
kind = "postgres"
autostart = false
data_dir = "{os.path.join(d, 'data')}"
socket_dir = "{os.path.join(d, 'sock')}"
"""),
    ]
    config = os.path.join(d, "hive-init.toml")
    socket = os.path.join(d, "hive-init.sock")
    with open(config, "w") as f:
        f.write(hive_config(d, programs, http_port))
    log = os.path.join(d, "importtime.txt")
    with open(log, "w") as err:
        proc = subprocess.Popen([PYTHON, "-X", "importtime", "-m", "hive_init", "run", "-c", config],
                                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, cwd=d, env=child_env())
        try:
            wait_for(lambda: os.path.exists(socket) or proc.poll() is not None, 60, 0.01, "the init")
            wait_for(lambda: http_status("127.0.0.1", http_port, "/health") in (200, 503), 30, 0.01, "/health")
            env = child_env({"HIVE_INIT_SOCKET": socket})
            subprocess.run([HIVE_INIT, "status"], env=env, capture_output=True, timeout=30)
            time.sleep(0.2)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    entries: list[tuple[str, int]] = []
    with open(log) as f:
        for line in f:
            if not line.startswith("import time:") or "imported package" in line:
                continue
            field = line.rstrip("\n").rsplit("|", 1)[-1]
            name = field.strip()
            if name:
                entries.append((name, (len(field) - len(field.lstrip()) - 1) // 2))
    if not any(n.startswith("hive_init.runtime") for n, _ in entries):
        raise BenchError("no hive_init modules in the importtime output")
    return entries


def importers(entries: list[tuple[str, int]]) -> dict[str, str]:
    """For each group, the group whose import first brought it in (importtime lists a module
    after its imports, indented one level deeper than the module that imported it)."""
    found: dict[str, str] = {}
    for i, (name, level) in enumerate(entries):
        group = group_of(name)
        if group in found:
            continue
        j, current = i, level
        found[group] = ""
        while True:
            j = next((k for k in range(j + 1, len(entries)) if entries[k][1] < current), None)
            if j is None:
                break
            current = entries[j][1]
            other = group_of(entries[j][0])
            if other != group:
                found[group] = other
                break
    return found


def group_of(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "hive_init":
        return ".".join(parts[:2])
    top = parts[0]
    if top in sys.stdlib_module_names or top.startswith("_"):
        return f"stdlib: {top.lstrip('_')}"  # _ssl with ssl, _asyncio with asyncio
    return top


def _measure(names: list[str], d: str) -> tuple[int, list[tuple[str, int, bool]]]:
    path = os.path.join(d, "modules.txt")
    with open(path, "w") as f:
        f.write("\n".join(names))
    out = subprocess.run([PYTHON, "-c", _MEASURE, path], capture_output=True, text=True, timeout=120, cwd=d,
                         env=child_env())
    lines = out.stdout.split("\n")
    baseline = int(lines[0].split()[1])
    rows = []
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], int(parts[1]), parts[2] == "1"))
    return baseline, rows


def _alone(name: str) -> float | None:
    code = ("import sys\n"
            "def rss():\n"
            "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS:')][0].split()[1])\n"
            f"a = rss()\nimport {name}\nprint(rss() - a)\n")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60, env=child_env())
    try:
        return int(out.stdout.strip()) / 1024
    except ValueError:
        return None


def measure(root: str, full: bool) -> dict:
    entries = modules_of_running_init(root)
    via = importers(entries)
    names = list(dict.fromkeys(n for n, _ in entries))
    resident = [n for n in names if n.split(".")[0] not in LAZY]
    d = subdir(root, "imports-measure")
    baseline, rows = _measure(resident + list(LAZY), d)
    groups: dict[str, float] = {}
    lazy: dict[str, float] = {}
    previous = baseline
    failed = []
    for name, rss, ok in rows:
        delta = (rss - previous) / 1024
        previous = rss
        if not ok:
            failed.append(name)
        top = name.split(".")[0]
        if top in LAZY:
            lazy[top] = lazy.get(top, 0.0) + delta
        else:
            groups[group_of(name)] = groups.get(group_of(name), 0.0) + delta
    total = sum(groups.values())
    shown = sorted(((g, v) for g, v in groups.items() if v >= 0.1), key=lambda x: -x[1])
    rest = total - sum(v for _, v in shown)
    out_groups = [{"name": g, "mib": v, "via": via.get(g, "")} for g, v in shown]
    out_groups.append({"name": "everything else (each < 0.1 MiB)", "mib": rest})
    if full:
        for g in out_groups:
            if g["name"] in ALONE:
                g["alone_mib"] = _alone(g["name"])
    lazy_out = [{"name": k, "mib": v} for k, v in lazy.items()]
    if full:
        for g in lazy_out:
            g["alone_mib"] = _alone(g["name"])
    return {"modules": len(resident), "baseline_mib": baseline / 1024, "total_mib": baseline / 1024 + total,
            "imports_mib": total, "groups": out_groups, "lazy": lazy_out, "all_groups": groups,
            "failed_imports": failed, "module_names": resident}
