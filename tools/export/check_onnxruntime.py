#!/usr/bin/env python3
"""Run vl3c's exported ONNX graphs with onnxruntime (CPU): fidelity against a transformers fixture, and timings.

Setup (tested with Python 3.11.7, onnxruntime 1.32.0, onnx 1.23.2, safetensors 0.8.0, numpy 2.4.6, protobuf 7.36.2):

    python3 -m venv /tmp/ortvenv
    /tmp/ortvenv/bin/pip install onnxruntime onnx safetensors numpy    # needs onnxruntime >= 1.20

Usage:

    # export a fixture, then check it against the transformers oracle
    vl3c export --model tests/fixtures/models/video_pruned_f32 --format onnx --out /tmp/onnx-video_pruned_f32
    /tmp/ortvenv/bin/python tools/export/check_onnxruntime.py \\
        --export-dir /tmp/onnx-video_pruned_f32 --fixture tests/fixtures/models/video_pruned_f32 [--json out.json]

    # only onnx.checker + genai_config.json presence
    /tmp/ortvenv/bin/python tools/export/check_onnxruntime.py --export-dir /tmp/onnx-2b

    # timings (2 intra-op threads) on an export of the VideoLLaMA3-2B-shaped checkpoint
    /tmp/ortvenv/bin/python tools/export/check_onnxruntime.py --bench --export-dir /tmp/onnx-2b [--runs 3]

What it checks (export directory layout as written by `vl3c export --format onnx`):

* `onnx.checker.check_model(path, full_check=True)` on every `*.onnx` (path-based: weights live in external data).
* `genai_config.json`: only reported as present/absent (and whether it parses as JSON).
* Vision: `vision_m1.onnx` / `vision_m2.onnx` (inputs `pixel_values` [n_patches, 588], `grid_thw` [1, 3],
  `merge_sizes` [1]; outputs `features` [n_tokens, hidden] and, for m2, `keep_mask` [n_tokens]). One image / video
  per call: the script slices the t*h*w rows of each grid entry, picks the graph by the entry's merge size and
  concatenates the features; compares them with `image_features` / `video_features` and `keep_mask` with the
  fixture's `video_compression_mask`.
* `embedding.onnx` (input_ids, image_features, video_features, video_compression_mask -> inputs_embeds) fed with the
  exported vision features (the fixture's if vision failed) and the fixture's video_compression_mask (the prompt's
  video token count is built from it; keep_mask is checked separately), then
  `decoder.onnx` on the prompt (empty past) -> logits compared with the fixture's prompt logits; greedy decode with
  the KV cache (presents fed back as pasts, one token at a time through embedding.onnx + decoder.onnx) for meta's
  `max_new_tokens`, compared with `generated_ids`.  For diagnosis the prompt is also run with the oracle
  (fixture) features, which isolates the text path from the vision path.
* Bars: f32 fixtures max|dlogits| <= 1e-4 and identical greedy ids (features: max|d| <= 1e-4, keep_mask exact);
  the bf16 fixture (weights_dtype bfloat16) is gated on max <= 0.1, mean <= 0.015 (features use the same bar,
  greedy ids are reported as a warning), and its f32-bar result is printed too.
  Exit status 1 if any gating bar fails (or a graph needed for it cannot run).

Layer count, kv heads and head dim are read from decoder.onnx's input list (names `past_key_values.%d.key/value`,
shape [batch, kv_heads, past, head_dim]); if those dims are symbolic, genai_config.json is consulted.

Bench (`--bench`): each graph gets its own session (SessionOptions: intra_op_num_threads=2,
inter_op_num_threads=1, ORT_ENABLE_ALL), created, timed and released before the next one to keep peak memory to
one graph (the 2B f32 decoder is about 6 GB).  (a) vision_m1 on one 448x448 image, grid [1, 32, 32] = 1024 random
patches; (b) prefill of 300 random inputs_embeds through decoder.onnx with an empty past; (c) single-token decoder
steps at a 300-token random past (the same past each step), reported as tokens/s.  Medians of --runs runs after
one warm-up run (decode: --decode-steps steps after 2 warm-up steps).  Session creation time and the process RSS
after creation are printed too, and whether a cargo/rustc process was seen around each workload's timed runs
(timings on a 2-core machine are meaningless next to a build).  --graph-opt changes the optimization level for
both modes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover
    sys.exit("onnxruntime is not installed; see the setup command at the top of this script")

PATCH_DIM = 588
F32_MAX = 1e-4
BF16_MAX = 0.1
BF16_MEAN = 0.015

ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


# ----------------------------------------------------------------------------------------------------------------
# helpers


def rss_gib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / (1024 * 1024)
    except OSError:
        pass
    return float("nan")


GRAPH_OPT = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
             "disable": "ORT_DISABLE_ALL"}
GRAPH_OPT_LEVEL = "all"  # set from --graph-opt


def make_session(path: Path, threads: int | None = None):
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT[GRAPH_OPT_LEVEL])
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    return sess, time.perf_counter() - t0


def io_info(sess):
    ins = {i.name: (i.type, list(i.shape)) for i in sess.get_inputs()}
    outs = {o.name: (o.type, list(o.shape)) for o in sess.get_outputs()}
    return ins, outs


def feed(sess, values: dict) -> dict:
    """Builds the feed for `sess` from `values`, casting to the declared dtypes; complains about missing inputs."""
    out = {}
    for i in sess.get_inputs():
        if i.name not in values:
            raise KeyError(f"graph input {i.name!r} ({i.type} {i.shape}) is not one this script knows how to feed")
        dt = ORT_TYPES.get(i.type)
        v = np.asarray(values[i.name])
        out[i.name] = np.ascontiguousarray(v.astype(dt) if dt is not None and v.dtype != dt else v)
    return out


def run(sess, values: dict, outputs=None) -> dict:
    names = outputs or [o.name for o in sess.get_outputs()]
    res = sess.run(names, feed(sess, values))
    return dict(zip(names, res))


def diff(a, b) -> dict:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return {"shape_mismatch": [list(a.shape), list(b.shape)]}
    if a.size == 0:
        return {"max": 0.0, "mean": 0.0, "ref_max_abs": 0.0}
    d = np.abs(a - b)
    return {"max": float(d.max()), "mean": float(d.mean()), "ref_max_abs": float(np.abs(b).max())}


def fmt_diff(d: dict) -> str:
    if "shape_mismatch" in d:
        return f"SHAPE MISMATCH got {d['shape_mismatch'][0]} expected {d['shape_mismatch'][1]}"
    return f"max|d|={d['max']:.3e} mean|d|={d['mean']:.3e} (max|ref|={d['ref_max_abs']:.3g})"


def short_err(e: BaseException) -> str:
    s = f"{type(e).__name__}: {e}"
    return s if len(s) < 4000 else s[:4000] + " ...[truncated]"


def dim(v):
    return v if isinstance(v, int) else None


class Report:
    def __init__(self):
        self.lines: list[str] = []
        self.data: dict = {"checks": {}, "fidelity": {}, "errors": []}
        self.failed = False

    def p(self, s: str = ""):
        print(s, flush=True)
        self.lines.append(s)

    def bar(self, name: str, ok: bool, detail: str, gating: bool = True):
        tag = "PASS" if ok else ("FAIL" if gating else "WARN")
        if gating and not ok:
            self.failed = True
        self.p(f"- **{tag}** {name}: {detail}")
        self.data["fidelity"].setdefault("bars", []).append(
            {"name": name, "ok": bool(ok), "gating": gating, "detail": detail})

    def error(self, where: str, e: BaseException, gating: bool = True):
        msg = short_err(e)
        if gating:
            self.failed = True
        self.p(f"- **{'FAIL' if gating else 'WARN'}** {where}: `{msg}`")
        self.data["errors"].append({"where": where, "error": msg, "gating": gating})


# ----------------------------------------------------------------------------------------------------------------
# checker / inventory


def check_models(export_dir: Path, rep: Report):
    import onnx

    rep.p("## onnx.checker (full_check=True)")
    files = sorted(export_dir.glob("*.onnx"))
    if not files:
        rep.p("- **FAIL** no *.onnx files in the export directory")
        rep.failed = True
    for f in files:
        t0 = time.perf_counter()
        try:
            onnx.checker.check_model(str(f), full_check=True)
            ok, msg = True, "ok"
        except Exception as e:  # noqa: BLE001
            ok, msg = False, short_err(e)
        dt = time.perf_counter() - t0
        opset, n_nodes, locs, ext_bytes, n_init = "?", -1, set(), 0, 0
        try:
            m = onnx.load(str(f), load_external_data=False)
            opset = ",".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in m.opset_import)
            n_nodes = len(m.graph.node)
            for t in m.graph.initializer:
                n_init += 1
                if t.data_location == onnx.TensorProto.EXTERNAL:
                    kv = {e.key: e.value for e in t.external_data}
                    locs.add(kv.get("location", "?"))
                    ext_bytes += int(kv.get("length", 0))
        except Exception:  # noqa: BLE001
            pass
        size = f.stat().st_size + ext_bytes
        data = sorted(locs)
        rep.p(f"- {'PASS' if ok else '**FAIL**'} `{f.name}` (external data: {', '.join(data) or 'none'}; "
              f"{size / 2**20:.1f} MiB, {n_init} initializers, {n_nodes} nodes, opset {opset}, {dt:.1f}s): {msg}")
        rep.data["checks"][f.name] = {"ok": ok, "msg": msg, "bytes": size, "nodes": n_nodes, "opset": opset}
        if not ok:
            rep.failed = True
    gc_path = export_dir / "genai_config.json"
    if gc_path.exists():
        try:
            j = json.loads(gc_path.read_text())
            rep.p(f"- genai_config.json: present, valid JSON, top-level keys {sorted(j)}")
            rep.data["genai_config"] = "present"
        except Exception as e:  # noqa: BLE001
            rep.p(f"- genai_config.json: present but not valid JSON: {short_err(e)}")
            rep.data["genai_config"] = "invalid"
    else:
        rep.p("- genai_config.json: **absent**")
        rep.data["genai_config"] = "absent"
    rep.p()


def load_genai(export_dir: Path) -> dict:
    try:
        return json.loads((export_dir / "genai_config.json").read_text())
    except Exception:  # noqa: BLE001
        return {}


def find_key(d, names):
    """Depth-first search for the first key in `names` holding an int in a nested dict."""
    if isinstance(d, dict):
        for n in names:
            if isinstance(d.get(n), int):
                return d[n]
        for v in d.values():
            r = find_key(v, names)
            if r is not None:
                return r
    return None


class DecoderSpec:
    """Decoder KV layout derived from the graph's inputs (names + shapes)."""

    PAST_RE = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")

    def __init__(self, sess, export_dir: Path):
        ins, outs = io_info(sess)
        self.inputs, self.outputs = ins, outs
        self.past = {}  # (layer, kind) -> name
        for n in ins:
            m = self.PAST_RE.match(n)
            if m:
                self.past[(int(m.group(1)), m.group(2))] = n
        layers = sorted({k[0] for k in self.past})
        if not layers or layers != list(range(len(layers))):
            raise ValueError(f"decoder inputs: unexpected past_key_values layer set {layers}: {sorted(ins)}")
        self.layers = len(layers)
        shape = ins[self.past[(0, "key")]][1]
        genai = load_genai(export_dir)
        self.kv_heads = dim(shape[1]) if len(shape) == 4 else None
        self.head_dim = dim(shape[3]) if len(shape) == 4 else None
        if self.kv_heads is None:
            self.kv_heads = find_key(genai, ["num_key_value_heads"])
        if self.head_dim is None:
            self.head_dim = find_key(genai, ["head_size", "head_dim"])
        if self.kv_heads is None or self.head_dim is None:
            raise ValueError(f"cannot determine kv_heads/head_dim from decoder input shape {shape} or genai_config")
        self.past_dtype = ORT_TYPES.get(ins[self.past[(0, "key")]][0], np.float32)
        self.present = {}
        for (layer, kind), _ in self.past.items():
            name = f"present.{layer}.{kind}"
            if name not in outs:
                raise ValueError(f"decoder output {name!r} missing; outputs: {sorted(outs)}")
            self.present[(layer, kind)] = name
        if "logits" not in outs:
            raise ValueError(f"decoder has no 'logits' output: {sorted(outs)}")
        emb_shape = ins.get("inputs_embeds", (None, [None, None, None]))[1]
        self.hidden = dim(emb_shape[2]) if len(emb_shape) == 3 else None
        self.vocab = dim(outs["logits"][1][2]) if len(outs["logits"][1]) == 3 else None

    def describe(self) -> str:
        return (f"{self.layers} layers, kv_heads {self.kv_heads}, head_dim {self.head_dim}, "
                f"hidden {self.hidden}, vocab {self.vocab}, past dtype {np.dtype(self.past_dtype).name}")

    def empty_past(self) -> dict:
        z = np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.past_dtype)
        return {name: z for name in self.past.values()}

    def step(self, sess, embeds: np.ndarray, past: dict, past_len: int):
        seq = embeds.shape[1]
        vals = {
            "inputs_embeds": embeds,
            "attention_mask": np.ones((1, past_len + seq), dtype=np.int64),
            "position_ids": np.arange(past_len, past_len + seq, dtype=np.int64)[None, :],
        }
        vals.update(past)
        names = ["logits"] + [self.present[k] for k in sorted(self.past)]
        res = run(sess, vals, names)
        new_past = {self.past[k]: res[self.present[k]] for k in sorted(self.past)}
        return res["logits"], new_past


# ----------------------------------------------------------------------------------------------------------------
# fidelity


def run_vision(export_dir: Path, sessions: dict, pixels: np.ndarray, grids: np.ndarray, merges: np.ndarray,
               rep: Report, what: str):
    """Runs one grid entry at a time; returns (features, keep_mask or None)."""
    feats, masks = [], []
    row = 0
    have_mask = True
    for i, (g, m) in enumerate(zip(grids, merges)):
        t, h, w = (int(x) for x in g)
        m = int(m)
        n = t * h * w
        graph = f"vision_m{m}"
        if graph not in sessions:
            path = export_dir / f"{graph}.onnx"
            sess, dt = make_session(path)
            sessions[graph] = sess
            ins, outs = io_info(sess)
            rep.p(f"- session `{graph}.onnx` created in {dt:.2f}s; inputs {ins}; outputs {outs}")
        sess = sessions[graph]
        vals = {
            "pixel_values": pixels[row:row + n],
            "grid_thw": np.array([[t, h, w]], dtype=np.int64),
            "merge_sizes": np.array([m], dtype=np.int64),
        }
        res = run(sess, vals)
        f = res["features"]
        exp_tokens = t * (h // m) * (w // m)
        if f.shape[0] != exp_tokens:
            raise ValueError(f"{what} entry {i} grid {[t, h, w]} merge {m}: features has {f.shape[0]} rows, "
                             f"expected t*(h/m)*(w/m)={exp_tokens}")
        feats.append(f)
        if "keep_mask" in res:
            km = np.asarray(res["keep_mask"]).astype(bool).reshape(-1)
            if km.shape[0] != f.shape[0]:
                raise ValueError(f"{what} entry {i}: keep_mask has {km.shape[0]} entries, features {f.shape[0]} rows")
            masks.append(km)
        else:
            have_mask = False
            masks.append(np.ones(f.shape[0], dtype=bool))
        row += n
    if row != pixels.shape[0]:
        raise ValueError(f"{what}: grid entries cover {row} patch rows but pixel values have {pixels.shape[0]}")
    return np.concatenate(feats, axis=0), (np.concatenate(masks) if have_mask else None)


def fidelity(export_dir: Path, fixture: Path, rep: Report):
    from safetensors.numpy import load_file

    inputs = load_file(str(fixture / "inputs.safetensors"))
    expected = load_file(str(fixture / "expected.safetensors"))
    meta = json.loads((fixture / "meta.json").read_text())
    bf16 = meta.get("weights_dtype") == "bfloat16"
    n_new = int(meta["max_new_tokens"])
    input_ids = inputs["input_ids"].astype(np.int64)
    L = input_ids.shape[1]
    rep.p(f"## Fidelity: `{fixture.name}` ({meta.get('weights_dtype')}, L={L}, max_new_tokens={n_new}, "
          f"bar: {'bf16 max<=%g mean<=%g' % (BF16_MAX, BF16_MEAN) if bf16 else 'f32 max<=%g' % F32_MAX})")
    rep.data["fidelity"]["fixture"] = fixture.name

    def feat_bar(name, d):
        if "shape_mismatch" in d:
            rep.bar(name, False, fmt_diff(d))
        elif bf16:
            rep.bar(name + " (bf16 bar)", d["max"] <= BF16_MAX and d["mean"] <= BF16_MEAN, fmt_diff(d))
            rep.bar(name + " (f32 bar, info)", d["max"] <= F32_MAX, fmt_diff(d), gating=False)
        else:
            rep.bar(name, d["max"] <= F32_MAX, fmt_diff(d))

    hidden = None
    for k in ("image_features", "video_features"):
        if k in expected:
            hidden = expected[k].shape[1]

    sessions: dict = {}
    img_feats = vid_feats = vid_mask = None
    # --- vision
    rep.p("### vision")
    if "image_grid_thw" in inputs:
        try:
            img_feats, _ = run_vision(export_dir, sessions, inputs["pixel_values"], inputs["image_grid_thw"],
                                      inputs["image_merge_sizes"], rep, "images")
            d = diff(img_feats, expected["image_features"])
            rep.data["fidelity"]["image_features"] = d
            feat_bar(f"image_features ({len(inputs['image_grid_thw'])} image(s), "
                     f"merge {inputs['image_merge_sizes'].tolist()})", d)
        except Exception as e:  # noqa: BLE001
            rep.error("vision (images)", e)
            traceback.print_exc()
            img_feats = None
    if "video_grid_thw" in inputs:
        try:
            vid_feats, vid_mask = run_vision(export_dir, sessions, inputs["pixel_values_videos"],
                                             inputs["video_grid_thw"], inputs["video_merge_sizes"], rep, "videos")
            d = diff(vid_feats, expected["video_features"])
            rep.data["fidelity"]["video_features"] = d
            feat_bar(f"video_features ({len(inputs['video_grid_thw'])} video(s), "
                     f"merge {inputs['video_merge_sizes'].tolist()}, before pruning)", d)
            ref_mask = inputs["video_compression_mask"].astype(bool)
            if vid_mask is None:
                rep.bar("keep_mask", False, "vision graph has no keep_mask output")
            elif vid_mask.shape != ref_mask.shape:
                rep.bar("keep_mask", False, f"shape {vid_mask.shape} vs fixture {ref_mask.shape}")
            else:
                nd = int((vid_mask != ref_mask).sum())
                rep.bar("keep_mask == video_compression_mask", nd == 0,
                        f"{nd} of {ref_mask.size} differ; kept {int(vid_mask.sum())} (fixture {int(ref_mask.sum())})")
                rep.data["fidelity"]["keep_mask_mismatches"] = nd
        except Exception as e:  # noqa: BLE001
            rep.error("vision (videos)", e)
            traceback.print_exc()
            vid_feats = None
    sessions.clear()
    gc.collect()

    # --- embedding + decoder
    rep.p("### embedding + decoder")
    try:
        emb_sess, dt_e = make_session(export_dir / "embedding.onnx")
        ins, outs = io_info(emb_sess)
        rep.p(f"- session `embedding.onnx` created in {dt_e:.2f}s; inputs {ins}; outputs {outs}")
        dec_sess, dt_d = make_session(export_dir / "decoder.onnx")
        spec = DecoderSpec(dec_sess, export_dir)
        rep.p(f"- session `decoder.onnx` created in {dt_d:.2f}s; {spec.describe()}")
    except Exception as e:  # noqa: BLE001
        rep.error("embedding/decoder session", e)
        traceback.print_exc()
        return
    if hidden is None:
        hidden = spec.hidden or dim(ins.get("image_features", (None, [None, None]))[1][1])
    if hidden is None:
        rep.error("embedding", ValueError("cannot determine hidden size"))
        return
    zero_feats = np.zeros((0, hidden), dtype=np.float32)
    zero_mask = np.zeros((0,), dtype=bool)

    def embed(ids, img, vid, mask):
        vals = {"input_ids": ids,
                "image_features": img if img is not None else zero_feats,
                "video_features": vid if vid is not None else zero_feats,
                "video_compression_mask": mask if mask is not None else zero_mask}
        return run(emb_sess, vals, ["inputs_embeds"])["inputs_embeds"]

    def prompt_logits(img, vid, mask):
        emb = embed(input_ids, img, vid, mask)
        if emb.shape[:2] != (1, L):
            raise ValueError(f"inputs_embeds shape {emb.shape}, expected [1, {L}, hidden]")
        return spec.step(dec_sess, emb, spec.empty_past(), 0)

    has_img, has_vid = "image_features" in expected, "video_features" in expected
    ref_img = expected.get("image_features")
    ref_vid = expected.get("video_features")
    ref_mask = inputs["video_compression_mask"].astype(bool) if "video_compression_mask" in inputs else None

    # oracle features: isolates the text path
    try:
        logits_o, _ = prompt_logits(ref_img, ref_vid, ref_mask)
        d = diff(logits_o, expected["logits"])
        rep.p(f"- (diagnostic) prompt logits with the fixture's oracle features: {fmt_diff(d)}")
        rep.data["fidelity"]["logits_oracle_features"] = d
    except Exception as e:  # noqa: BLE001
        rep.error("embedding/decoder with oracle features", e)
        traceback.print_exc()

    # end to end
    e2e_img = img_feats if img_feats is not None else ref_img
    e2e_vid = vid_feats if vid_feats is not None else ref_vid
    e2e_mask = ref_mask  # the prompt's video token count comes from the fixture mask (keep_mask is checked above)
    note = []
    if has_img and img_feats is None:
        note.append("image features from the fixture (vision failed)")
    if has_vid and vid_feats is None:
        note.append("video features from the fixture (vision failed)")
    if has_vid and (vid_mask is None or vid_mask.shape != ref_mask.shape or (vid_mask != ref_mask).any()):
        note.append("fixture video_compression_mask, the exported keep_mask differs or is missing")
    try:
        t0 = time.perf_counter()
        logits, past = prompt_logits(e2e_img, e2e_vid, e2e_mask)
        t_prompt = time.perf_counter() - t0
        d = diff(logits, expected["logits"])
        rep.data["fidelity"]["logits"] = d
        label = "prompt logits (end to end" + ("; " + ", ".join(note) if note else "") + ")"
        if "shape_mismatch" in d:
            rep.bar(label, False, fmt_diff(d))
        elif bf16:
            rep.bar(label + " bf16 bar", d["max"] <= BF16_MAX and d["mean"] <= BF16_MEAN, fmt_diff(d))
            rep.bar(label + " f32 bar (info)", d["max"] <= F32_MAX, fmt_diff(d), gating=False)
            if "logits_bf16" in expected:
                db = diff(logits, expected["logits_bf16"])
                rep.p(f"- (info) vs transformers' own bf16 forward `logits_bf16`: {fmt_diff(db)}")
        else:
            rep.bar(label, d["max"] <= F32_MAX, fmt_diff(d))
        # greedy decode with the KV cache
        exp_ids = expected["generated_ids"].astype(np.int64).reshape(-1)
        ids = [int(np.argmax(logits[0, -1]))]
        past_len = L
        t1 = time.perf_counter()
        while len(ids) < n_new:
            emb = embed(np.array([[ids[-1]]], dtype=np.int64), None, None, None)
            lg, past = spec.step(dec_sess, emb, past, past_len)
            past_len += 1
            k0 = past[spec.past[(0, "key")]]
            if k0.shape[2] != past_len:
                raise ValueError(f"present.0.key has length {k0.shape[2]} after step, expected {past_len}")
            ids.append(int(np.argmax(lg[0, -1])))
        t_dec = time.perf_counter() - t1
        same = ids == exp_ids.tolist()
        rep.data["fidelity"]["generated_ids"] = ids
        rep.data["fidelity"]["expected_ids"] = exp_ids.tolist()
        rep.bar("greedy ids (KV cache)", same, f"got {ids} expected {exp_ids.tolist()}", gating=not bf16)
        rep.p(f"- timings: prompt (embedding+decoder, {L} tokens) {t_prompt * 1e3:.1f} ms; "
              f"{n_new - 1} decode steps {t_dec * 1e3:.1f} ms")
    except Exception as e:  # noqa: BLE001
        rep.error("embedding/decoder end to end", e)
        traceback.print_exc()
    rep.p()


# ----------------------------------------------------------------------------------------------------------------
# bench


def busy_pids() -> list[str]:
    """cargo / rustc processes (a build running next to the bench makes 2-core timings meaningless)."""
    return os.popen("pgrep -x cargo; pgrep rustc").read().split()


BUSY_SEEN: set = set()


def median_time(fn, runs: int, warmup: int = 1):
    """Median wall time of `runs` calls after `warmup` calls; also notes cargo/rustc seen around the timed runs."""
    for _ in range(warmup):
        fn()
    ts, seen = [], set()
    for _ in range(runs):
        seen.update(busy_pids())
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    seen.update(busy_pids())
    BUSY_SEEN.update(seen)
    median_time.last_busy = "yes" if seen else "no"
    return float(np.median(ts)), ts


def bench(export_dir: Path, rep: Report, args):
    threads = args.threads
    rng = np.random.default_rng(0)
    rows = []
    rep.p(f"## Bench (onnxruntime {ort.__version__}, CPU, intra_op={threads}, inter_op=1, {GRAPH_OPT[GRAPH_OPT_LEVEL]}, "
          f"median of {args.runs} after 1 warm-up)")
    busy = busy_pids()
    if busy:
        rep.p(f"- WARNING: cargo/rustc running (pids {busy}); timings are not meaningful")
    rep.p(f"- loadavg at start: {os.getloadavg()}")

    # (a) vision
    try:
        sess, dt = make_session(export_dir / "vision_m1.onnx", threads)
        rss = rss_gib()
        g = args.vision_grid
        n = g[0] * g[1] * g[2]
        px = rng.standard_normal((n, PATCH_DIM), dtype=np.float32)
        vals = {"pixel_values": px, "grid_thw": np.array([g], dtype=np.int64),
                "merge_sizes": np.array([1], dtype=np.int64)}
        fd = feed(sess, vals)
        out_shape = sess.run(None, fd)[0].shape
        med, ts = median_time(lambda: sess.run(None, fd), args.runs, warmup=0)  # the shape run was the warm-up
        rows.append((f"vision_m1, grid {g} ({n} patches) -> {list(out_shape)}", f"{med * 1e3:.1f} ms",
                     f"{n / med:.0f} patches/s", f"{dt:.1f} s", f"{rss:.1f}", median_time.last_busy))
        rep.data["bench_vision"] = {"median_s": med, "runs_s": ts, "session_s": dt, "rss_gib": rss}
        del sess, fd
        gc.collect()
    except Exception as e:  # noqa: BLE001
        rep.error("bench vision_m1", e)
        traceback.print_exc()

    # (b) prefill, (c) decode
    try:
        sess, dt = make_session(export_dir / "decoder.onnx", threads)
        rss = rss_gib()
        spec = DecoderSpec(sess, export_dir)
        rep.p(f"- decoder: {spec.describe()}")
        hidden = spec.hidden or find_key(load_genai(export_dir), ["hidden_size"])
        emb_dt = ORT_TYPES.get(spec.inputs["inputs_embeds"][0], np.float32)
        P = args.prefill
        x = (rng.standard_normal((1, P, hidden), dtype=np.float32) * 0.05).astype(emb_dt)
        empty = spec.empty_past()
        names = ["logits"] + [spec.present[k] for k in sorted(spec.past)]

        def prefill():
            return sess.run(names, feed(sess, {
                "inputs_embeds": x, "attention_mask": np.ones((1, P), dtype=np.int64),
                "position_ids": np.arange(P, dtype=np.int64)[None], **empty}))

        med_p, ts_p = median_time(prefill, args.runs)
        rows.append((f"decoder prefill, {P} tokens, empty past", f"{med_p * 1e3:.1f} ms", f"{P / med_p:.1f} tok/s",
                     f"{dt:.1f} s", f"{rss:.1f}", median_time.last_busy))
        rep.data["bench_prefill"] = {"median_s": med_p, "runs_s": ts_p, "session_s": dt, "rss_gib": rss}

        Q = args.past
        past = {name: (rng.standard_normal((1, spec.kv_heads, Q, spec.head_dim), dtype=np.float32)
                       ).astype(spec.past_dtype) for name in spec.past.values()}
        x1 = (rng.standard_normal((1, 1, hidden), dtype=np.float32) * 0.05).astype(emb_dt)
        fd = feed(sess, {"inputs_embeds": x1, "attention_mask": np.ones((1, Q + 1), dtype=np.int64),
                         "position_ids": np.array([[Q]], dtype=np.int64), **past})
        med_d, ts_d = median_time(lambda: sess.run(names, fd), args.decode_steps, warmup=2)
        rows.append((f"decoder step, 1 token at past {Q}", f"{med_d * 1e3:.1f} ms", f"{1 / med_d:.2f} tok/s",
                     "(same session)", f"{rss_gib():.1f}", median_time.last_busy))
        rep.data["bench_decode"] = {"median_s": med_d, "runs_s": ts_d, "tok_per_s": 1 / med_d}
        del sess, fd
        gc.collect()
    except Exception as e:  # noqa: BLE001
        rep.error("bench decoder", e)
        traceback.print_exc()

    rep.p()
    rep.p("| workload | median | throughput | session creation | RSS after create (GiB) | cargo/rustc seen |")
    rep.p("|---|---|---|---|---|---|")
    for r in rows:
        rep.p("| " + " | ".join(r) + " |")
    rep.p()
    rep.p(f"- loadavg at end: {os.getloadavg()}")
    if BUSY_SEEN:
        rep.p(f"- WARNING: cargo/rustc seen during the timed runs (pids {sorted(BUSY_SEEN)}); timings are suspect")
    else:
        rep.p("- no cargo/rustc process seen during the timed runs")
    rep.data["bench_busy_pids"] = sorted(BUSY_SEEN)


# ----------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export-dir", required=True, type=Path)
    ap.add_argument("--fixture", type=Path, help="tests/fixtures/models/<name> for the fidelity check")
    ap.add_argument("--bench", action="store_true", help="time vision_m1 / prefill / decode with --threads threads")
    ap.add_argument("--no-check", action="store_true", help="skip onnx.checker")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    ap.add_argument("--graph-opt", choices=sorted(GRAPH_OPT), default="all",
                    help="onnxruntime graph optimization level (default all; 'disable' runs the graph without ORT's "
                         "rewrites, to tell an export bug from an optimizer effect)")
    ap.add_argument("--threads", type=int, default=2, help="bench intra-op threads (default 2)")
    ap.add_argument("--runs", type=int, default=3, help="bench timed runs for vision/prefill (default 3)")
    ap.add_argument("--decode-steps", type=int, default=10, help="bench timed decode steps (default 10)")
    ap.add_argument("--prefill", type=int, default=300)
    ap.add_argument("--past", type=int, default=300)
    ap.add_argument("--vision-grid", type=int, nargs=3, default=[1, 32, 32], metavar=("T", "H", "W"))
    args = ap.parse_args(argv)
    global GRAPH_OPT_LEVEL
    GRAPH_OPT_LEVEL = args.graph_opt
    if not args.fixture and not args.bench and args.no_check:
        ap.error("nothing to do: give --fixture and/or --bench, or drop --no-check")

    rep = Report()
    import onnx
    import safetensors

    rep.p(f"# vl3c ONNX export check: `{args.export_dir}`")
    rep.p(f"- graph optimization: {GRAPH_OPT[GRAPH_OPT_LEVEL]}")
    rep.p(f"- onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}, "
          f"safetensors {safetensors.__version__}, python {sys.version.split()[0]}")
    rep.data["versions"] = {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "numpy": np.__version__}
    if not args.export_dir.is_dir():
        rep.p(f"- **FAIL** export dir {args.export_dir} does not exist")
        return 1
    files = sorted(p.name for p in args.export_dir.iterdir())
    rep.p(f"- files: {', '.join(files)}")
    rep.p()
    if not args.no_check:
        check_models(args.export_dir, rep)
    if args.fixture:
        fidelity(args.export_dir, args.fixture, rep)
    if args.bench:
        bench(args.export_dir, rep, args)
    rep.p(f"**Overall: {'FAIL' if rep.failed else 'PASS'}**")
    rep.data["overall"] = "FAIL" if rep.failed else "PASS"
    if args.json:
        args.json.write_text(json.dumps(rep.data, indent=2, default=str))
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
