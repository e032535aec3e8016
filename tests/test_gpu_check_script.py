"""The CPU rehearsal of scripts/gpu_check.sh: the one GPU check must not be wasted.

The script runs in --quick mode against a stand-in device: ``tests/standin`` on
PYTHONPATH makes ``import cupy`` a stand-in whose arrays refuse mixing with host arrays
and whose RawModule compiles the CUDA source as host C++ with g++; ``tests/fakebin`` first
on PATH answers nvidia-smi's queries as an H200 would.  Checked: the exit status, the
steps in order, the files written (at most 8, the names the script documents),
gpu-check.json's content, a broken NVRTC failing the pre-flight loudly (nothing after it
runs), and a failing step failing the script while the later steps still run.
scripts/gpu_sweeps.sh --quick is rehearsed the same way.

Skipped with the reason where bash, coreutils' timeout, g++ or the stand-in is missing;
under CI (``$CI`` set) those fail instead.
"""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STANDIN = ROOT / "tests" / "standin"
FAKEBIN = ROOT / "tests" / "fakebin"
STEPS = ["preflight", "tests", "train", "bench-fused", "bench-twins", "bench-tf32"]
FILES = {"gpu-check.log", "gpu-check.json", "bench-fused.json", "bench-twins.json", "bench-tf32.json"}


def _need(what, present):
    if not present:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is missing: CI must run the GPU check's rehearsal")
        pytest.skip(f"{what} is missing")


@pytest.fixture(scope="module")
def tools():
    _need("bash", shutil.which("bash"))
    _need("timeout (coreutils)", shutil.which("timeout"))
    _need("g++ (the stand-in CuPy compiles the CUDA source with it)", shutil.which("g++"))
    _need("the stand-in CuPy (tests/standin/cupy)", (STANDIN / "cupy" / "__init__.py").exists())
    _need("the stand-in's host build of the CUDA source (tests/hostcuda)", (ROOT / "tests" / "hostcuda").exists())


def run_check(out, *args, python=sys.executable, env=None, timeout=300, script=SCRIPT):
    e = {k: v for k, v in os.environ.items() if k not in ("GPUMLP_FUSED", "GPUMLP_STANDIN_BROKEN", "CUPY_TF32")}
    e.update(PATH=os.pathsep.join([str(FAKEBIN), e.get("PATH", "")]),
             PYTHONPATH=os.pathsep.join([str(STANDIN)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else [])),
             OUT=str(out), PYTHON=str(python))
    e.update(env or {})
    r = subprocess.run(["bash", str(script), *args], env=e, cwd=out.parent, capture_output=True, text=True,
                       timeout=timeout)
    print(r.stdout[-6000:], r.stderr[-2000:])                   # shown when a test fails
    return r


def positions(stdout, names):
    return [stdout.find(f"=== step {name} ") for name in names]


@pytest.fixture(scope="module")
def passing_run(tools, tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "out"
    return out, run_check(out, "--quick")


def test_help_says_what_the_script_does():
    _need("bash", shutil.which("bash"))
    r = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for word in ("--quick", "preflight", "gpu-check.json", ".gpu-deps", "330 s"):
        assert word in r.stdout
    r = subprocess.run(["bash", str(SCRIPT), "--no-such-option"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "unknown argument" in r.stderr


def test_every_step_runs_in_order_and_passes(passing_run):
    out, r = passing_run
    assert r.returncode == 0, r.stdout[-3000:]
    where = positions(r.stdout, STEPS + ["report"])
    assert -1 not in where and where == sorted(where)
    summary = r.stdout[r.stdout.index("=== summary (quick mode)"):]
    for name in STEPS + ["report"]:
        assert any(line.split()[:2] == [name, "ok"] for line in summary.splitlines()), name
    assert "gpu_check: all 7 steps ok" in r.stdout
    # the pre-flight printed the card, the versions, the compile and the kernel
    pre = r.stdout[where[0]:where[1]]
    for text in ("card: NVIDIA H200, 580.159.03", "CuPy 14.0.0-standin", "NVRTC", "compiled kernel sgd", "ready"):
        assert text in pre


def test_the_files_are_the_documented_ones(passing_run):
    out, r = passing_run
    names = set(os.listdir(out))
    assert names == FILES and len(names) <= 8
    log = (out / "gpu-check.log").read_text()
    assert "=== summary (quick mode)" in log and "=== step bench-tf32 " in log


def test_the_json_holds_versions_steps_tests_and_ratios(passing_run):
    out, r = passing_run
    doc = json.loads((out / "gpu-check.json").read_text())
    assert doc["mode"] == "quick" and doc["ok"] is True
    assert doc["card"]["name"] == "NVIDIA H200"
    v = doc["versions"]
    assert v["cupy"] == "14.0.0-standin" and v["numpy"] == np.__version__ and v["nvidia_driver"] == "580.159.03"
    assert isinstance(v["cuda_runtime"], str) and isinstance(v["cuda_driver"], str)
    assert doc["preflight"]["ok"] is True and doc["preflight"]["checks"]["compile"]["instances"] > 0
    assert [s["name"] for s in doc["steps"]] == STEPS
    for s in doc["steps"]:
        assert s["status"] == "ok" and s["exit_code"] == 0 and 0 <= s["seconds"] < s["timeout_s"], s
    tests = doc["tests"]
    assert tests["counts"]["passed"] >= 4 and tests["counts"]["passed"] == len(tests["cases"])
    for case in tests["cases"]:
        assert case["nodeid"].startswith("tests/test_gpu.py::test_") and case["outcome"] == "passed", case
    assert 0 < doc["train"]["test_accuracy"] <= 1 and doc["train"]["epochs"] == 2
    bench = doc["bench"]
    for name in ("fused", "twins", "tf32"):
        rows = [row for net in bench[name]["nets"] for row in net["results"]]
        assert rows, name
        for row in rows:
            assert math.isfinite(row["gpumlp_over_floor"]) and row["gpumlp_over_floor"] > 0
            assert row["samples_per_s"] > 0
    for key, ratio in (("fused_over_twins", "fused_over_twins"), ("tf32_over_float32", "tf32_over_float32")):
        assert bench[key] and all(math.isfinite(x[ratio]) and x[ratio] > 0 for x in bench[key])


def test_a_broken_nvrtc_fails_the_preflight_and_nothing_else_runs(tools, tmp_path):
    out = tmp_path / "out"
    r = run_check(out, "--quick", env={"GPUMLP_STANDIN_BROKEN": "nvrtc"}, timeout=120)
    assert r.returncode == 2
    reason = [line for line in r.stdout.splitlines() if line.startswith("gpu_check: PRE-FLIGHT FAILED: ")]
    assert len(reason) == 1 and "NVRTC" in reason[0] and "CompileException" in reason[0]   # the error, passed on
    assert positions(r.stdout, STEPS[1:]) == [-1] * 5
    doc = json.loads((out / "gpu-check.json").read_text())
    assert doc["ok"] is False and "NVRTC" in doc["preflight"]["reason"]
    assert [s["status"] for s in doc["steps"]] == ["failed"] + ["not run"] * 5
    assert doc["tests"] is None and doc["bench"] == {}
    assert set(os.listdir(out)) == {"gpu-check.log", "gpu-check.json"}


def test_a_failing_step_fails_the_script_and_the_later_steps_still_run(tools, tmp_path):
    """PYTHON is a wrapper that fails the digits run (and only it)."""
    wrapper = tmp_path / "python"
    wrapper.write_text("#!/bin/sh\n"
                       'case " $* " in *" -m gpumlp train "*) '
                       'echo "rehearsal: train fails on purpose" >&2; exit 3;; esac\n'
                       f'exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    out = tmp_path / "out"
    r = run_check(out, "--quick", python=wrapper)
    assert r.returncode == 1
    assert "rehearsal: train fails on purpose" in r.stdout
    assert "gpu_check: FAILED: train" in r.stdout
    doc = json.loads((out / "gpu-check.json").read_text())
    status = {s["name"]: (s["status"], s["exit_code"]) for s in doc["steps"]}
    assert status.pop("train") == ("failed", 3)
    assert set(status.values()) == {("ok", 0)}, status
    assert doc["ok"] is False and doc["train"] is None


def test_the_sweeps_script_follows_the_same_protocol(tools, tmp_path):
    """scripts/gpu_sweeps.sh --quick on the stand-in: the pre-flight, both sweeps and the pack,
    each step ok, two files; a broken NVRTC stops it at the pre-flight."""
    out = tmp_path / "sweeps"
    r = run_check(out, "--quick", script=ROOT / "scripts" / "gpu_sweeps.sh")
    assert r.returncode == 0, r.stdout[-3000:]
    names = ["preflight", "step-sweep", "train-sweep", "pack"]
    where = positions(r.stdout, names)
    assert -1 not in where and where == sorted(where)
    assert "gpu_sweeps: all 4 steps ok" in r.stdout
    assert set(os.listdir(out)) == {"sweeps.log", "sweeps.tar.gz"}
    broken = run_check(tmp_path / "broken", "--quick", script=ROOT / "scripts" / "gpu_sweeps.sh",
                       env={"GPUMLP_STANDIN_BROKEN": "nvrtc"})
    assert broken.returncode == 2 and "=== step step-sweep" not in broken.stdout
    assert "CompileException" in broken.stdout
