#!/usr/bin/env python3
"""JSON plumbing for tools/gpu/check.sh: turns tool outputs into figures and assembles check.json.

    report.py nvidia-smi CSV                 one GPU's fields from nvidia-smi --query-gpu (csv)
    report.py test-kernels JSON...           counts and failures of `vl3c test-kernels --json` runs
    report.py test-kernels-chunks LIST N     `test-kernels --list` → N comma-separated op lists
    report.py sanitizer LOG                  compute-sanitizer's error summary
    report.py ttft LOG                       the summary lines of `vl3c run` (TTFT, tokens)
    report.py compile LOG                    the summary line of `vl3c compile`
    report.py bench VL3C_JSON TORCH_JSON     vl3c against PyTorch, side by side
    report.py env                            Python, torch, NVIDIA wheels, NVRTC search
    report.py assemble OUT MODE BUDGET_S     check.json from OUT/stages/*/ (prints the summary)

Every command prints one JSON object on stdout (assemble also writes OUT/check.json).
"""

import csv
import glob
import json
import os
import platform
import re
import socket
import sys
import time


def nvidia_smi(path):
    fields = ["name", "driver_version", "compute_cap", "memory_total_mib", "sm_clock_max_mhz", "power_limit_w"]
    rows = [r for r in csv.reader(open(path)) if r]
    if not rows:
        return {"error": "nvidia-smi printed nothing"}
    gpus = [dict(zip(fields, (c.strip() for c in r))) for r in rows]
    out = dict(gpus[0])
    out["gpus"] = len(gpus)
    if out.get("compute_cap"):
        out["sm"] = out["compute_cap"].replace(".", "")
    return out


def test_kernels(*paths):
    """Merges the reports of several `test-kernels --json` runs; a run that left no report is
    listed under `unfinished` with its ops."""
    reports, seconds, unfinished = [], 0.0, []
    for path in paths:
        try:
            data = json.load(open(path))
        except (OSError, ValueError) as e:
            unfinished.append({"file": os.path.basename(path), "error": f"{type(e).__name__}: {e}"})
            continue
        if "unfinished" in data:
            unfinished.append(data)
            continue
        reports += data.get("reports", [])
        seconds += data.get("seconds") or 0.0
    failed = [r for r in reports if not r.get("passed")]
    by_op = {}
    for r in reports:
        op = by_op.setdefault(r.get("op", "?"), {"cases": 0, "failed": 0, "seconds": 0.0, "worst_nmse_over_limit": 0.0})
        op["cases"] += 1
        op["failed"] += 0 if r.get("passed") else 1
        op["seconds"] = round(op["seconds"] + (r.get("seconds") or 0.0), 4)
        for o in r.get("outputs") or []:
            if o.get("limit"):
                op["worst_nmse_over_limit"] = max(op["worst_nmse_over_limit"], (o.get("nmse") or 0.0) / o["limit"])
    return {
        "cases": len(reports),
        "passed": len(reports) - len(failed),
        "failed": len(failed),
        "unfinished": unfinished,
        "launches": sum(r.get("launches", 0) for r in reports),
        "seconds": round(seconds, 3),
        "failures": [{"case": r.get("case"), "error": r.get("error"), "outputs": r.get("outputs")} for r in failed[:25]],
        "by_op": by_op,
    }


def test_kernels_chunks(list_path, n):
    """`test-kernels --list` labels → n comma-separated op lists of about equal case counts
    (a label starts with its op family's name)."""
    counts = {}
    for line in open(list_path):
        if line.strip():
            op = re.split(r"[(:]", line.strip(), maxsplit=1)[0]
            counts[op] = counts.get(op, 0) + 1
    total, chunks, current, size = sum(counts.values()), [], [], 0
    for op in sorted(counts):
        current.append(op)
        size += counts[op]
        if size >= total / n * (len(chunks) + 1) and len(chunks) < n - 1:
            chunks.append(current)
            current = []
    if current:
        chunks.append(current)
    return [",".join(c) for c in chunks]


def sanitizer(path):
    text = open(path, errors="replace").read()
    m = re.findall(r"ERROR SUMMARY: (\d+) error", text)
    hazards = re.findall(r"RACECHECK SUMMARY: (\d+) hazard", text)
    out = {"errors": int(m[-1]) if m else None, "summary_lines": [l.strip() for l in text.splitlines() if "SUMMARY" in l][-4:]}
    if hazards:
        out["hazards"] = int(hazards[-1])
    if m is None or not m:
        out["note"] = "no ERROR SUMMARY line (the tool or the program stopped early)"
    out["first_errors"] = [l.strip() for l in text.splitlines() if l.startswith("========= ") and ("Error" in l or "Invalid" in l or "hazard" in l.lower())][:10]
    return out


SUMMARY = re.compile(
    r"(?P<prompt>\d+) prompt tokens \((?P<image>\d+) image tokens(?:, (?P<before>\d+) video tokens → (?P<after>\d+) after pruning)?\), "
    r"(?P<new>\d+) new tokens, TTFT (?P<ttft>[\d.]+|n/a) s?(?: \(vision (?P<vision>[\d.]+) s\))?(?P<cache>, vision from the encoder cache)?"
)


def ttft(path):
    answers = []
    for line in open(path, errors="replace"):
        m = SUMMARY.search(line)
        if not m:
            continue
        g = m.groupdict()
        answers.append(
            {
                "prompt_tokens": int(g["prompt"]),
                "video_tokens": int(g["before"]) if g["before"] else 0,
                "video_tokens_kept": int(g["after"]) if g["after"] else 0,
                "ttft_s": float(g["ttft"]) if g["ttft"] != "n/a" else None,
                "vision_s": float(g["vision"]) if g["vision"] else None,
                "vision_from_cache": bool(g["cache"]),
            }
        )
    if not answers:
        return {"error": "no summary line in the log"}
    out = dict(answers[0])
    if len(answers) > 1:
        out["ttft_cached_s"] = answers[1]["ttft_s"]
    out["answers"] = answers
    return out


def compile_line(path):
    for line in open(path, errors="replace"):
        if line.startswith("compile: "):
            m = re.search(r" in ([\d.]+)s", line)
            return {"line": line.strip(), "seconds": float(m.group(1)) if m else None}
    return {"error": "no compile summary line"}


def bench(vl3c_path, torch_path):
    def load(p):
        try:
            return json.load(open(p))
        except (OSError, ValueError):
            return None

    v, t = load(vl3c_path), load(torch_path)
    out = {}
    keys = ["vision_s", "prefill_s", "decode_tok_s", "peak_rss_bytes", "peak_gpu_bytes"]
    if v:
        out["vl3c"] = {k: v.get(k) for k in keys if k in v}
        out["vl3c"]["config"] = v.get("config")
        out["vl3c"]["limits"] = v.get("limits")
    if t:
        out["pytorch"] = {k: t.get(k) for k in keys + ["generate_decode_tok_s"] if k in t}
        out["pytorch"]["config"] = t.get("config")
    if v and t:
        sp = {}
        for k in ["vision_s", "prefill_s"]:
            if v.get(k) and t.get(k):
                sp[k] = t[k] / v[k]
        if v.get("decode_tok_s") and t.get("decode_tok_s"):
            sp["decode_tok_s"] = v["decode_tok_s"] / t["decode_tok_s"]
        out["vl3c_speedup"] = sp
    return out


def env():
    out = {"python": sys.executable, "python_version": platform.python_version()}
    try:
        import torch

        out["torch"] = torch.__version__
        out["torch_cuda"] = torch.version.cuda
        out["torch_sees_gpu"] = torch.cuda.is_available()
    except Exception as e:  # noqa: BLE001 - any import failure is a finding
        out["torch"] = f"not importable: {type(e).__name__}: {e}"
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except Exception as e:  # noqa: BLE001
        out["transformers"] = f"not importable: {type(e).__name__}"
    import site

    dirs = [d for d in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(d)]
    wheels = sorted({os.path.basename(p).split(".dist-info")[0] for d in dirs for p in glob.glob(os.path.join(d, "nvidia_*.dist-info"))})
    out["nvidia_wheels"] = wheels
    nvrtc = [p for d in dirs for p in glob.glob(os.path.join(d, "nvidia", "*", "lib", "libnvrtc.so*")) if "builtins" not in p and ".alt." not in p]
    out["nvrtc_in_site_packages"] = nvrtc
    out["nvidia_lib_dirs"] = sorted({os.path.dirname(p) for d in dirs for p in glob.glob(os.path.join(d, "nvidia", "*", "lib", "*.so*"))})
    homes = []
    for d in dirs:
        for sub in ("nvidia/cu13/lib/libnvrtc.so.13", "nvidia/cuda_nvrtc/lib/libnvrtc.so.12"):
            if os.path.isfile(os.path.join(d, sub)):
                homes.append(d)
                break
    out["nvrtc_homes"] = homes
    return out


STATUS_ORDER = {"fail": 3, "timeout": 3, "skipped": 1, "pass": 0}


def assemble(out_dir, mode, budget_s):
    stages = []
    for meta_path in sorted(glob.glob(os.path.join(out_dir, "stages", "*", "_stage.json")), key=os.path.getmtime):
        meta = json.load(open(meta_path))
        figures = {}
        for p in sorted(glob.glob(os.path.join(os.path.dirname(meta_path), "*.json"))):
            name = os.path.basename(p)[:-5]
            if name == "_stage":
                continue
            try:
                figures[name] = json.load(open(p))
            except ValueError as e:
                figures[name] = {"error": f"unreadable JSON: {e}", "text": open(p, errors="replace").read()[:2000]}
        meta["figures"] = figures
        stages.append(meta)
    order = ["setup", "probe", "test_kernels", "sanitizer", "fixtures", "model_2b", "bench"]
    stages.sort(key=lambda s: order.index(s["name"]) if s["name"] in order else len(order))
    statuses = [s["status"] for s in stages]
    if any(s in ("fail", "timeout") for s in statuses):
        overall = "fail"
    elif any(s == "skipped" for s in statuses):
        overall = "incomplete"
    else:
        overall = "pass"
    started = min((s.get("started", time.time()) for s in stages), default=time.time())
    bundle = None
    bundle_path = os.path.join(out_dir, "bundle.json")
    if os.path.isfile(bundle_path):
        bundle = json.load(open(bundle_path))
    result = {
        "check": "vl3c GPU check (tools/gpu/check.sh)",
        "mode": mode,
        "overall": overall,
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "budget_s": float(budget_s),
        "bundle": bundle,
        "summary": summary(stages),
        "stages": stages,
    }
    json.dump(result, open(os.path.join(out_dir, "check.json"), "w"), indent=2)
    return result


def summary(stages):
    """The figures a reader wants first, one line each."""
    by = {s["name"]: s for s in stages}
    out = {name: f"{s['status']} in {s['seconds']:.0f} s" + (f" ({s['reason']})" if s.get("reason") else "") for name, s in by.items()}
    f = lambda stage: by.get(stage, {}).get("figures", {})  # noqa: E731
    smi = f("probe").get("nvidia_smi", {})
    if smi.get("name"):
        out["gpu"] = f"{smi['name']}, SM {smi.get('compute_cap')}, driver {smi.get('driver_version')}"
    probe = f("probe").get("cubins", {})
    if "all_cubins_loaded" in probe:
        out["cubins"] = f"{len(probe.get('engines', []))} engines, all loaded: {probe['all_cubins_loaded']}"
    tk = f("test_kernels").get("summary", {})
    if "cases" in tk:
        out["test_kernels_counts"] = f"{tk['passed']} passed, {tk['failed']} failed ({tk['launches']} launches)" + (
            f", {len(tk['unfinished'])} chunks unfinished" if tk.get("unfinished") else ""
        )
    for tool in ["memcheck", "racecheck"]:
        s = f("sanitizer").get(tool)
        if s:
            out[f"sanitizer_{tool}"] = f"{s.get('errors')} errors" + (f", {s['hazards']} hazards" if "hazards" in s else "")
    fx = {k: v for k, v in f("fixtures").items() if isinstance(v, dict) and "fixture" in v}
    if fx:
        out["fixtures_results"] = {
            k: ("pass" if v.get("pass") else "FAIL") + (f", max {v['max_abs']:.2e}, mean {v['mean_abs']:.2e}, ids identical {v['ids_identical']}" if "max_abs" in v else f": {v.get('error')}")
            for k, v in fx.items()
        }
    b = f("bench").get("comparison", {})
    for side in ["vl3c", "pytorch"]:
        if side in b:
            r = b[side]
            out[f"bench_{side}"] = ", ".join(
                f"{k} {r[k]:.4g}" for k in ["vision_s", "prefill_s", "decode_tok_s"] if isinstance(r.get(k), (int, float))
            )
    if b.get("vl3c_speedup"):
        out["bench_vl3c_speedup"] = {k: round(v, 3) for k, v in b["vl3c_speedup"].items()}
    for mode in ["video_prune", "video_no_prune"]:
        v = f("bench").get(mode)
        if v and "ttft_s" in v:
            out[f"ttft_{mode}"] = f"{v['ttft_s']} s (vision {v.get('vision_s')} s), {v['video_tokens']} → {v['video_tokens_kept']} video tokens, {v['prompt_tokens']} prompt tokens"
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "nvidia-smi":
        r = nvidia_smi(args[0])
    elif cmd == "test-kernels":
        r = test_kernels(*args)
    elif cmd == "test-kernels-chunks":
        print("\n".join(test_kernels_chunks(args[0], int(args[1]))))
        return 0
    elif cmd == "sanitizer":
        r = sanitizer(args[0])
    elif cmd == "ttft":
        r = ttft(args[0])
    elif cmd == "compile":
        r = compile_line(args[0])
    elif cmd == "bench":
        r = bench(args[0], args[1])
    elif cmd == "env":
        r = env()
    elif cmd == "assemble":
        r = assemble(args[0], args[1], args[2])
        print(json.dumps({"overall": r["overall"], "seconds": r["seconds"], "summary": r["summary"]}, indent=2, ensure_ascii=False))
        return 0
    else:
        sys.exit(f"unknown command {cmd}\n{__doc__}")
    print(json.dumps(r, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
