"""The benchmark scripts run on a machine without ../shared: they skip cleanly (exit 0).

What they measure is in BENCHMARKS.md; here only that each one starts, parses its
arguments and says SKIP instead of failing when the photos and weights are absent.
"""

import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
SCRIPTS = sorted(f for f in os.listdir(BENCHMARKS) if f.endswith(".py") and not f.startswith("_"))


def _run(args, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s != "wsol6.py"])
def test_skips_without_the_shared_folder(script, tmp_path):
    extra = ["--out", str(tmp_path / "out")] if script == "make_large_photos.py" else []
    result = _run([os.path.join(BENCHMARKS, script), "--shared", str(tmp_path / "no_shared"), *extra], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SKIP" in result.stdout


def test_wsol6_recipe_skips_without_its_inputs(tmp_path):
    missing = str(tmp_path / "missing")
    result = _run([os.path.join(BENCHMARKS, "wsol6.py"), "--data", missing, "--boxes", missing + ".csv",
                   "--weights", missing + ".h5", "--out", str(tmp_path / "out")], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("SKIP: not found:")
