#!/usr/bin/env python3
"""Compares one `vl3c eval` output with a fixture's expected outputs, at the bar of the fixture's
weights dtype (meta.json `weights_dtype`), as tests/engine.rs does on the CPU engine:

    float32   max |Δlogits| <= 1e-4 and generated_ids identical to transformers'
    bfloat16  max |Δlogits| <= 0.1 and mean |Δlogits| <= 0.015 (against transformers f32 on the
              upcast weights); generated_ids are reported, not required

Prints one JSON object; exit 0 when the bar is met, 1 when not, 2 when the files cannot be read
or their shapes differ.

    python3 tools/gpu/compare.py --fixture tests/fixtures/models/video_bf16 --got out.safetensors
"""

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

BARS = {
    "float32": {"max_abs": 1e-4, "mean_abs": None, "ids_identical": True},
    "bfloat16": {"max_abs": 0.1, "mean_abs": 0.015, "ids_identical": False},
}


def diff(got, want):
    """max and mean |got − want|, and how many of got's values are not finite."""
    worst, total, bad = 0.0, 0.0, 0
    for g, w in zip(got, want):
        if not math.isfinite(g):
            bad += 1
            continue
        d = abs(g - w)
        total += d
        if d > worst:
            worst = d
    return worst, total / max(len(got), 1), bad


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fixture", required=True, help="fixture directory (meta.json, expected.safetensors)")
    p.add_argument("--got", required=True, help="safetensors written by `vl3c eval --out`")
    p.add_argument("--name", help="label in the JSON (default: the fixture directory's name)")
    a = p.parse_args()

    name = a.name or os.path.basename(os.path.normpath(a.fixture))
    result = {"fixture": name, "pass": False}
    try:
        meta = json.load(open(os.path.join(a.fixture, "meta.json")))
        dtype = meta.get("weights_dtype", "float32")
        bar = BARS.get(dtype, BARS["float32"])
        result.update(weights_dtype=dtype, bar=bar)
        want = st.read(os.path.join(a.fixture, "expected.safetensors"), {"logits", "generated_ids", "logits_bf16"})
        got = st.read(a.got, {"logits", "generated_ids"})
    except (OSError, ValueError, KeyError) as e:
        result["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(result))
        return 2

    if "logits" not in got or got["logits"][1] != want["logits"][1]:
        shape = got["logits"][1] if "logits" in got else None
        result["error"] = f"logits shape {shape}, expected {want['logits'][1]}"
        print(json.dumps(result))
        return 2

    worst, mean, bad = diff(got["logits"][2], want["logits"][2])
    result.update(max_abs=worst, mean_abs=mean, non_finite=bad, logits_shape=want["logits"][1])
    if "logits_bf16" in want:
        # How far transformers' own bf16 forward lies from the same f32 target, for scale.
        result["transformers_bf16_max_abs"], result["transformers_bf16_mean_abs"], _ = diff(
            want["logits_bf16"][2], want["logits"][2]
        )

    want_ids = want["generated_ids"][2] if "generated_ids" in want else None
    got_ids = got["generated_ids"][2] if "generated_ids" in got else None
    result["ids_identical"] = want_ids is not None and got_ids == want_ids
    if not result["ids_identical"]:
        result["generated_ids"] = got_ids
        result["expected_ids"] = want_ids

    ok = bad == 0 and worst <= bar["max_abs"]
    if bar["mean_abs"] is not None:
        ok = ok and mean <= bar["mean_abs"]
    if bar["ids_identical"]:
        ok = ok and result["ids_identical"]
    result["pass"] = ok
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
