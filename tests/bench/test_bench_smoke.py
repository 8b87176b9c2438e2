"""The benchmark's quick mode still runs end to end: `python -m bench --quick` completes and its
JSON has every figure with numbers for both sides. No timing is asserted: the machines are shared
and noisy, and the benchmark is there to report, not to judge."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import IS_ROOT, UNSHARE
from bench.report import FIGURES
from bench.sides import SIDES

ROOT = Path(__file__).resolve().parents[2]
# figures that need what an ordinary user lacks (a new PID namespace)
NEEDS_ROOT = {"orphans_reaped", "orphans_zombies_left"}

pytestmark = pytest.mark.bench  # ~40 s: out of the default run, a step of its own in .ci/run


def test_quick_run_reports_every_figure_for_both_sides(tmp_path):
    # a bound on a hang, not on speed
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.md").read_text().startswith("# hive-init vs supervisord")
    assert result["mode"] == "quick"
    for key in ("cpu", "cores", "kernel", "python"):
        assert result["machine"][key]
    assert result["date"]

    expected = {f.key for f in FIGURES}
    if not (IS_ROOT and UNSHARE):
        expected -= NEEDS_ROOT
    figures = {f["key"]: f for f in result["figures"]}
    missing = []
    for key in sorted(expected):
        for side in SIDES:
            stats = figures[key][side]
            if not stats or not isinstance(stats["median"], (int, float)) or math.isnan(stats["median"]):
                missing.append(f"{key} ({side})")
    assert not missing, f"figures without numbers: {missing}; skipped: {result['skipped']}"
    assert result["imports"]["groups"], "no per-import RSS costs"
