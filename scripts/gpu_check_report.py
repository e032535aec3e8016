"""What scripts/gpu_check.sh found, as one machine-readable file: $OUT/gpu-check.json.

  python scripts/gpu_check_report.py --out DIR --steps STEPS.tsv [--preflight P.json]
         [--junit J.xml] [--train-metrics M.json] [--bench NAME=FILE ...] [--mode full|quick]
  python scripts/gpu_check_report.py --verdict J.xml

The first form writes DIR/gpu-check.json: the date, the card and versions (from the
pre-flight), each step's status, exit code and seconds, each gpu test's outcome (from
pytest's JUnit XML: node id, passed/failed/skipped/error, the message where not passed),
the digits run's final test accuracy, and the benchmark's ratios (from scripts/bench.py's
--json files: per net and batch size gpumlp/torch, gpumlp/floor, samples/s, and across
files compiled kernels/twins and TF32/full float32).

The second form judges the gpu tests' XML: exit 0 when at least one test ran and every
one passed; 1 otherwise (a skip on the GPU machine means the GPU was not used: a failure).
"""
import argparse
import datetime
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def nodeid(case):
    """pytest's node id from a JUnit <testcase> (xunit1 gives its file; else guess from classname)."""
    classname, name = case.get("classname", ""), case.get("name", "")
    path = case.get("file")
    if path:
        module = path[:-3].replace("/", ".") if path.endswith(".py") else path
        rest = classname[len(module):].lstrip(".") if classname.startswith(module) else ""
    else:
        parts = classname.split(".")
        path, rest = classname, ""
        for i in range(len(parts), 0, -1):
            candidate = "/".join(parts[:i]) + ".py"
            if (ROOT / candidate).exists():
                path, rest = candidate, ".".join(parts[i:])
                break
    return "::".join([path] + (rest.split(".") if rest else []) + [name])


def read_junit(path):
    """[{nodeid, outcome, message?, seconds}], in the order pytest ran them."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        entry = {"nodeid": nodeid(case), "outcome": "passed", "seconds": float(case.get("time", 0) or 0)}
        for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            child = case.find(tag)
            if child is not None:
                entry["outcome"] = outcome
                message = child.get("message") or (child.text or "").strip().splitlines()[-1:] or [""]
                entry["message"] = message if isinstance(message, str) else message[0]
                break
        cases.append(entry)
    return cases


def counts(cases):
    c = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for case in cases:
        c[case["outcome"]] += 1
    return c


def verdict(path):
    try:
        cases = read_junit(path)
    except (OSError, ET.ParseError) as e:
        print(f"gpu tests: no readable JUnit XML ({e})")
        return 1
    c = counts(cases)
    print("gpu tests: " + ", ".join(f"{v} {k}" for k, v in c.items()))
    if not cases:
        print("gpu tests: none ran: a failure")
        return 1
    if c["skipped"]:
        print(f"gpu tests: {c['skipped']} skipped on the GPU machine: counted as a failure (the GPU was not used)")
        for case in cases:
            if case["outcome"] == "skipped":
                print(f"  SKIPPED {case['nodeid']}: {case.get('message', '')}")
    return 0 if c["passed"] == len(cases) else 1


def read_steps(path):
    steps = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        name, status, code, seconds, limit = line.split("\t")
        steps.append({"name": name, "status": status, "exit_code": None if code == "-" else int(code),
                      "seconds": None if seconds == "-" else float(seconds), "timeout_s": int(limit)})
    return steps


def bench_summary(path):
    """Per net and batch size, the ratios scripts/bench.py's --json holds."""
    data = json.loads(Path(path).read_text())
    header = data.get("header", {})
    nets = []
    for net in data.get("nets", []):
        rows = [{"N": r["N"], "gpumlp_ms": r["min_ms"]["gpumlp"], "torch_ms": r["min_ms"].get("torch"),
                 "floor_ms": r["min_ms"]["floor"], "gpumlp_over_torch": r.get("gpumlp_over_torch"),
                 "gpumlp_over_floor": r.get("gpumlp_over_floor"), "samples_per_s": r.get("samples_per_s"),
                 "memory_ratio": (r.get("memory") or {}).get("ratio")}
                for r in net.get("results", [])]
        nets.append({"sizes": net["sizes"], "kernels_per_step": net.get("kernels_per_step"),
                     "gradient_error_vs_float64_oracle": net.get("gradient_error_vs_float64_oracle"),
                     "results": rows})
    return {"file": Path(path).name, "device": header.get("device"), "versions": header.get("versions"),
            "nets": nets}


def ratio_between(a, b, key):
    """For each (net, N) in both summaries: a's gpumlp time over b's."""
    times = {(tuple(n["sizes"]), r["N"]): r["gpumlp_ms"] for n in b["nets"] for r in n["results"]}
    out = []
    for n in a["nets"]:
        for r in n["results"]:
            other = times.get((tuple(n["sizes"]), r["N"]))
            if other:
                out.append({"sizes": n["sizes"], "N": r["N"], key: r["gpumlp_ms"] / other})
    return out


def report(args):
    pre = {}
    if args.preflight and os.path.exists(args.preflight):
        pre = json.loads(Path(args.preflight).read_text())
    steps = read_steps(args.steps)
    doc = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "mode": args.mode, "ok": all(s["status"] == "ok" for s in steps),
           "card": pre.get("card"), "versions": pre.get("versions"), "python": pre.get("python"),
           "preflight": {k: pre.get(k) for k in ("ok", "reason", "packages", "checks", "seconds", "nvidia_smi")},
           "steps": steps, "tests": None, "train": None, "bench": {}, "notes": []}
    if args.junit and os.path.exists(args.junit):
        try:
            cases = read_junit(args.junit)
            doc["tests"] = {"counts": counts(cases), "cases": cases}
        except ET.ParseError as e:
            doc["notes"].append(f"the gpu tests' JUnit XML is unreadable: {e}")
    if args.train_metrics and os.path.exists(args.train_metrics):
        m = json.loads(Path(args.train_metrics).read_text())
        doc["train"] = {k: m.get(k) for k in ("test_accuracy", "test_loss", "train_seconds", "device")}
        doc["train"]["epochs"] = len(m.get("history", []))
    for spec in args.bench:
        name, _, path = spec.partition("=")
        if os.path.exists(path):
            try:
                doc["bench"][name] = bench_summary(path)
            except (ValueError, KeyError, TypeError) as e:
                doc["notes"].append(f"bench {name}: {path} is unreadable ({type(e).__name__}: {e})")
    b = doc["bench"]
    if "fused" in b and "twins" in b:
        b["fused_over_twins"] = ratio_between(b["fused"], b["twins"], "fused_over_twins")
    if "tf32" in b and "fused" in b:
        b["tf32_over_float32"] = ratio_between(b["tf32"], b["fused"], "tf32_over_float32")
    doc["files"] = sorted(os.listdir(args.out)) if os.path.isdir(args.out) else []
    if "gpu-check.json" not in doc["files"]:
        doc["files"] = sorted(doc["files"] + ["gpu-check.json"])
    target = Path(args.out) / "gpu-check.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(target)
    print(f"wrote {target}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--verdict", metavar="JUNIT.xml", help="only judge the gpu tests' JUnit XML")
    p.add_argument("--out")
    p.add_argument("--steps")
    p.add_argument("--preflight")
    p.add_argument("--junit")
    p.add_argument("--train-metrics")
    p.add_argument("--bench", action="append", default=[], metavar="NAME=FILE")
    p.add_argument("--mode", default="full")
    args = p.parse_args()
    if args.verdict:
        return verdict(args.verdict)
    if not (args.out and args.steps):
        p.error("--out and --steps are needed (or --verdict)")
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
