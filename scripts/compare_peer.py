#!/usr/bin/env python3
"""Ratio of our VGG16 Faster R-CNN time to torchvision's, measured pair by pair.

Runs `detect benchmark` (inference) or scripts/bench_faster_rcnn.py (a training step)
and the torchvision peer script (in the peer's own
Python, where torch lives) one after the other, --rounds times, and prints each side's
median per round, the ratio ours/peer per pair (min, median, max) and the CPU it ran on.
Pairs taken in turn keep the ratio meaningful when a shared machine's speed drifts.

--precision float32|bf16|both: ours `detect benchmark --precision P`, the peer
scripts/torchvision_faster_rcnn.py --precision P (bf16: torch.autocast on the CPU);
`both` measures each round in the order ours fp32, peer fp32, ours bf16, peer bf16 and
reports both ratios (inference only).

--emulate skylake approximates an Intel AVX-512 CPU without VNNI (Skylake-SP) on a
newer CPU: both sides' oneDNN kernels are limited to that instruction set
(ONEDNN_MAX_CPU_ISA=AVX512_CORE), and torch's MKL, which picks a generic code path on
CPUs it does not recognise as Intel, is told it runs on one (a preloaded two-line
library answering MKL's CPU-vendor query). --onednn chooses our side's oneDNN setting:
default (detect's own choice), on, off (TensorFlow's default on such a CPU).

Usage:
  .venv/bin/python scripts/compare_peer.py --peer-python /tmp/peer/bin/python
      [--mode infer|train] [--rounds 3] [--runs 5] [--precision float32|bf16|both]
      [--emulate none|skylake] [--onednn default|on|off]
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from detect.runtime import cpu_flags, cpu_model, isa_summary  # noqa: E402

# shared/peers/torchvision_faster_rcnn.py with a bf16 autocast mode added.
PEER_SCRIPT = os.path.join(ROOT, "scripts", "torchvision_faster_rcnn.py")
MKL_INTEL_SHIM = "int mkl_serv_intel_cpu_true(void) { return 1; }\nint mkl_serv_intel_cpu(void) { return 1; }\n"


def _mkl_shim(folder):
    """Build the library that makes MKL take its Intel code path; its path."""
    source, library = os.path.join(folder, "mkl_intel.c"), os.path.join(folder, "libmkl_intel.so")
    with open(source, "w", encoding="utf-8") as f:
        f.write(MKL_INTEL_SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", library, source], check=True)
    return library


def environments(emulate, onednn, folder):
    """(ours, peer) environment variables for the runs."""
    ours, peer = dict(os.environ), dict(os.environ)
    ours.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if onednn != "default":
        ours["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn == "on" else "0"
    if emulate == "skylake":
        for env in (ours, peer):
            env["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE"
        peer["LD_PRELOAD"] = _mkl_shim(folder)
        if onednn == "default":
            # detect's choice on an AVX-512 CPU without VNNI (detect/runtime.py).
            ours["TF_ENABLE_ONEDNN_OPTS"] = "1"
    return ours, peer


def run_json(command, env):
    """The last JSON line a benchmark command prints."""
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"no JSON line from {' '.join(command)}:\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def ours_inference(args, env, folder, precision="float32"):
    """`detect benchmark`'s end-to-end predict_step() time for the VGG16 paper configuration."""
    out = os.path.join(folder, "benchmark")
    # `-m` from the repository root: this checkout's package, whatever the venv installed.
    command = [sys.executable, "-m", "detect.cli", "benchmark", "--detectors", "faster_rcnn",
               "--backbone", "vgg16", "--runs", str(args.runs), "--precision", precision, "--out", out]
    subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    with open(os.path.join(out, "speed.csv"), encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["status"] == "ok")
    return {"median_s": float(row["detect_s"]), "cpu": row["source"]}


def measure(args, ours_env, peer_env, folder):
    """Inference: ours through `detect benchmark` (the one number); training: the bench script.
    One row per pair (round, precision), the pairs of a round taken one after the other."""
    common = ["--mode", args.mode, "--runs", str(args.runs)]
    precisions = ["float32", "bf16"] if args.precision == "both" else [args.precision]
    rows = []
    for round_index in range(1, args.rounds + 1):
        for precision in precisions:
            if args.mode == "infer":
                ours = ours_inference(args, ours_env, folder, precision)
            else:
                ours = run_json([sys.executable, os.path.join(ROOT, "scripts", "bench_faster_rcnn.py"), *common],
                                ours_env)
            peer = run_json([args.peer_python, args.peer_script, *common, "--precision", precision], peer_env)
            rows.append({"round": round_index, "precision": precision, "ours_s": ours["median_s"],
                         "peer_s": peer["median_s"], "ratio": ours["median_s"] / peer["median_s"],
                         "ours_cpu": ours.get("cpu")})
            print(f"round {round_index} {precision}: ours {ours['median_s']:.3f} s, peer {peer['median_s']:.3f} s, "
                  f"ratio {rows[-1]['ratio']:.2f}", flush=True)
    return rows


def summary(rows):
    """{precision: {ratio_median, ratio_min, ratio_max, pairs}} over the measured pairs."""
    out = {}
    for precision in dict.fromkeys(r["precision"] for r in rows):
        ratios = [r["ratio"] for r in rows if r["precision"] == precision]
        out[precision] = {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                          "ratio_max": max(ratios), "pairs": len(ratios)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-python", required=True, help="Python of the venv that has torch and torchvision")
    parser.add_argument("--peer-script", default=PEER_SCRIPT)
    parser.add_argument("--mode", choices=["infer", "train"], default="infer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--precision", choices=["float32", "bf16", "both"], default="float32")
    parser.add_argument("--emulate", choices=["none", "skylake"], default="none")
    parser.add_argument("--onednn", choices=["default", "on", "off"], default="default")
    parser.add_argument("--out", help="Also write the result as JSON here.")
    args = parser.parse_args()
    if args.mode == "train" and args.precision != "float32":
        raise SystemExit("--precision bf16|both: inference only (--mode infer)")
    with tempfile.TemporaryDirectory() as folder:
        rows = measure(args, *environments(args.emulate, args.onednn, folder), folder)
    by_precision = summary(rows)
    result = {
        "cpu": cpu_model(), "isa": isa_summary(cpu_flags()), "cpus": os.cpu_count(), "mode": args.mode,
        "emulate": args.emulate, "onednn": args.onednn, "ours_detail": rows[0]["ours_cpu"], "rounds": rows,
        **by_precision[rows[0]["precision"]], "by_precision": by_precision, "load_average": os.getloadavg()[0],
    }
    for precision, ratio in by_precision.items():
        print(f"{args.mode} {precision} on {result['cpu']} ({result['isa']}, {result['cpus']} CPUs, emulate "
              f"{args.emulate}, our oneDNN {args.onednn}): ours/peer median {ratio['ratio_median']:.2f} "
              f"(min {ratio['ratio_min']:.2f}, max {ratio['ratio_max']:.2f}) over {ratio['pairs']} pairs")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
