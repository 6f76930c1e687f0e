#!/usr/bin/env bash
# vl3c against PyTorch transformers and llama.cpp on the same shapes, in one invocation, one
# after the other (never at once: they would fight for the same cores and memory bandwidth).
#
#   tools/bench/compare.sh                          # VideoLLaMA3-2B shapes, random weights
#   tools/bench/compare.sh --config tests/fixtures/models/image_tied_f32/config.json \
#       --image-size 56 --context 16 --decode-tokens 4   # a tiny checkpoint, seconds
#
# Steps: build release; make the random 2B checkpoint if missing (or use the checkpoint next to
# --config); pick the vl3c side (--engine PATH, else compile an engine when `vl3c compile`
# exists, else the reference executor on --model); build llama.cpp's llama-bench
# (tools/bench/llama_cpp.sh) and write qwen2 GGUFs of the checkpoint's LLM half
# (tools/bench/to_gguf.py, bf16 and Q8_0; skipped with one line when it cannot build or the
# checkpoint is not bf16; --llama-cpp off skips it); then --repeat rounds, each one
# `vl3c bench --json` run (after --warmup) and one llama-bench prefill of --context tokens and
# decode at a --context-token depth per GGUF, taking turns because a shared VM's memory
# bandwidth drifts between minutes; run tools/bench/pytorch_bench.py in bf16 and f32; print a
# side-by-side table of medians and write every JSON and the table to --out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONFIG=""                   # config.json of an existing checkpoint (its directory is the model)
CHECKPOINT=/tmp/vl3-2b      # where the random 2B checkpoint lives (made if missing)
ENGINE=""                   # an engine directory to bench instead of compiling one
BACKEND=auto                # auto | model | engine
OUT=/tmp/vl3c-bench
PYTHON="${PYTHON:-/work/pyenv/bin/python}"
DTYPES="bf16 f32"
IMAGE_SIZE=448 CONTEXT=300 DECODE_TOKENS=32 THREADS=2 WARMUP=1 REPEAT=5
LLAMA=on                    # on | off
GGUF_TYPES="bf16 q8_0"
LLAMA_DIR=/tmp/vl3c-llama.cpp

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    cat <<EOF
Options: --config FILE --checkpoint DIR --engine DIR --backend auto|model|engine --out DIR
         --python PATH --dtypes "bf16 f32" --image-size N --context N --decode-tokens N
         --threads N --warmup N --repeat N --llama-cpp on|off --gguf-types "bf16 q8_0"
         --llama-dir DIR
EOF
}

while [[ $# -gt 0 ]]; do
    [[ $1 == -h || $1 == --help ]] && { usage; exit 0; }
    [[ $# -ge 2 ]] || { echo "error: $1 needs a value" >&2; exit 2; }
    case $1 in
        --config) CONFIG=$2 ;;
        --checkpoint) CHECKPOINT=$2 ;;
        --engine) ENGINE=$2; BACKEND=engine ;;
        --backend) BACKEND=$2 ;;
        --out) OUT=$2 ;;
        --python) PYTHON=$2 ;;
        --dtypes) DTYPES=$2 ;;
        --image-size) IMAGE_SIZE=$2 ;;
        --context) CONTEXT=$2 ;;
        --decode-tokens) DECODE_TOKENS=$2 ;;
        --threads) THREADS=$2 ;;
        --warmup) WARMUP=$2 ;;
        --repeat) REPEAT=$2 ;;
        --llama-cpp) LLAMA=$2 ;;
        --gguf-types) GGUF_TYPES=$2 ;;
        --llama-dir) LLAMA_DIR=$2 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done
case $BACKEND in auto | model | engine) ;; *) echo "error: --backend must be auto, model or engine" >&2; exit 2 ;; esac

cd "$ROOT"
mkdir -p "$OUT"
echo "== build" >&2
cargo build --release --quiet
VL3C="$ROOT/target/release/vl3c"

if [[ -n $CONFIG ]]; then
    MODEL="$(dirname "$CONFIG")"
else
    CONFIG="$ROOT/examples/configs/videollama3-2b/config.json"
    MODEL="$CHECKPOINT"
    if [[ ! -f $MODEL/config.json ]]; then
        echo "== random 2B checkpoint → $MODEL" >&2
        cargo run --release --quiet --example random_checkpoint -- --preset 2b --out "$MODEL"
    fi
fi

if [[ $BACKEND == auto ]]; then
    # The compiled engine when this build has `vl3c compile`; the reference executor otherwise.
    if "$VL3C" compile --help >/dev/null 2>&1; then BACKEND=engine; else BACKEND=model; fi
fi
if [[ $BACKEND == engine && -z $ENGINE ]]; then
    ENGINE="$OUT/engine"
    echo "== vl3c compile $MODEL → $ENGINE" >&2
    "$VL3C" compile --model "$MODEL" --out "$ENGINE" --threads "$THREADS"
fi

SHAPES=(--image-size "$IMAGE_SIZE" --context "$CONTEXT" --decode-tokens "$DECODE_TOKENS"
        --threads "$THREADS" --warmup "$WARMUP" --repeat "$REPEAT")
if [[ $BACKEND == engine ]]; then SOURCE=(--engine "$ENGINE"); else SOURCE=(--model "$MODEL"); fi

# llama.cpp: its own prefill (-p N, empty cache) and decode at depth N (-n M -d N) runs.
GGUFS=()
if [[ $LLAMA == on ]]; then
    if BENCH_BIN=$(bash tools/bench/llama_cpp.sh --dir "$LLAMA_DIR"); then
        for q in $GGUF_TYPES; do
            gguf="$OUT/llm-$q.gguf"
            if [[ ! -f $gguf ]] && ! "$PYTHON" tools/bench/to_gguf.py --model "$MODEL" --out "$gguf" --type "$q" >&2; then
                echo "== llama.cpp $q skipped: no GGUF of $MODEL (see above)" >&2
                continue
            fi
            GGUFS+=("$q")
        done
    else
        echo "== llama.cpp skipped: it could not be built (the line above says why)" >&2
    fi
fi

# vl3c and llama.cpp take turns, one timed run each per round (--repeat rounds): memory
# bandwidth on a shared VM drifts by half between minutes and decode follows it, so blocks of
# runs one after the other would compare the machine's moods rather than the engines.
VL3C_ROUNDS=() LLAMA_FILES=()
for r in $(seq "$REPEAT"); do
    echo "== round $r/$REPEAT: vl3c bench ${SOURCE[*]} (one run after $WARMUP warm-up)" >&2
    "$VL3C" bench "${SOURCE[@]}" --image-size "$IMAGE_SIZE" --context "$CONTEXT" \
        --decode-tokens "$DECODE_TOKENS" --threads "$THREADS" --warmup "$WARMUP" --repeat 1 \
        --json > "$OUT/vl3c_round$r.json"
    VL3C_ROUNDS+=("$OUT/vl3c_round$r.json")
    for q in "${GGUFS[@]}"; do
        gguf="$OUT/llm-$q.gguf"
        echo "== round $r/$REPEAT: llama-bench $q -t $THREADS -p $CONTEXT; -n $DECODE_TOKENS -d $CONTEXT" >&2
        "$BENCH_BIN" -m "$gguf" -t "$THREADS" -p "$CONTEXT" -n 0 -r 1 -o json > "$OUT/llama_${q}_pp_round$r.json"
        "$BENCH_BIN" -m "$gguf" -t "$THREADS" -p 0 -n "$DECODE_TOKENS" -d "$CONTEXT" -r 1 -o json \
            > "$OUT/llama_${q}_tg_round$r.json"
    done
done
for q in "${GGUFS[@]}"; do
    LLAMA_FILES+=("$q" "$OUT/llama_${q}_pp_round" "$OUT/llama_${q}_tg_round")
done
# One vl3c.json with the keys of `vl3c bench --json`: every round's figures in `runs`, the
# medians over rounds on top, the bounds from the median probes.
"$PYTHON" - "$OUT/vl3c.json" "${VL3C_ROUNDS[@]}" <<'EOF'
import json, statistics, sys

out, *paths = sys.argv[1:]
rounds = [json.load(open(p)) for p in paths]
med = lambda f: statistics.median(f(r) for r in rounds)
merged = dict(rounds[0])
for k in ("vision_s", "prefill_s", "decode_tok_s"):
    merged[k] = med(lambda r: r[k])
merged["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in rounds)
merged["runs"] = {k: [v for r in rounds for v in r["runs"][k]] for k in rounds[0]["runs"]}
# Each run's decode against the bandwidth probed between its own steps, paired run by run.
paired = [x for r in rounds for x in (r["runs"].get("decode_of_bound") or [])]
if paired:
    merged["decode_of_bound"] = statistics.median(paired)
lim = dict(rounds[0]["limits"])
lim["bandwidth_gbs"] = med(lambda r: r["limits"]["bandwidth_gbs"])
lim["peak_gflops"] = med(lambda r: r["limits"]["peak_gflops"])
lim["vision_s_bound"] = lim["vision_flops"] / (lim["peak_gflops"] * 1e9)
lim["prefill_s_bound"] = lim["prefill_flops"] / (lim["peak_gflops"] * 1e9)
lim["decode_tok_s_bound"] = lim["bandwidth_gbs"] * 1e9 / lim["decode_bytes_per_token"]
merged["limits"] = lim
merged["config"] = dict(rounds[0]["config"], repeat=len(rounds))
json.dump(merged, open(out, "w"), indent=2)
EOF

FILES=("$OUT/vl3c.json")
for dtype in $DTYPES; do
    echo "== pytorch $dtype ${SHAPES[*]}" >&2
    "$PYTHON" tools/bench/pytorch_bench.py --config "$CONFIG" --dtype "$dtype" "${SHAPES[@]}" \
        > "$OUT/pytorch_$dtype.json"
    FILES+=("$OUT/pytorch_$dtype.json")
done

"$PYTHON" - "${FILES[@]}" -- "${LLAMA_FILES[@]}" <<'EOF' | tee "$OUT/summary.txt"
import json, statistics, sys

args = sys.argv[1:]
sep = args.index("--")
vl3c, *torch_runs = [json.load(open(p)) for p in args[:sep]]
llama = args[sep + 1:]
c = vl3c["config"]
print(f"vl3c ({c['backend']}) vs PyTorch, {c['patches']} patches ({c['image_size']}²), "
      f"context {c['context']}, {c['decode_tokens']} decode tokens, {c['threads']} threads, "
      f"median of {c['repeat']}")
print("speedup = how many times faster vl3c is (time: PyTorch/vl3c; tok/s: vl3c/PyTorch); RSS: vl3c/PyTorch")
rows = [("vision s", "vision_s", True), ("prefill s", "prefill_s", True),
        ("decode tok/s", "decode_tok_s", False), ("peak RSS GB", "peak_rss_bytes", None)]
head = f"{'':<14}{'vl3c':>10}"
for t in torch_runs:
    name = "torch " + t["config"]["dtype"]
    head += f"{name:>12}{'speedup':>9}"
print(head)
for label, key, lower_is_better in rows:
    scale = 1e-9 if key == "peak_rss_bytes" else 1.0
    line = f"{label:<14}{vl3c[key] * scale:>10.4g}"
    for t in torch_runs:
        if lower_is_better is None:
            ratio = vl3c[key] / t[key]
        else:
            ratio = t[key] / vl3c[key] if lower_is_better else vl3c[key] / t[key]
        line += f"{t[key] * scale:>12.4g}{ratio:>8.2f}x"
    print(line)
for t in torch_runs:
    if t.get("generate_decode_tok_s"):
        r = vl3c["decode_tok_s"] / t["generate_decode_tok_s"]
        print(f"torch {t['config']['dtype']} generate(): {t['generate_decode_tok_s']:.3f} tok/s decode (vl3c {r:.2f}x)")
ctx = vl3c["config"]["context"]
rounds = vl3c["config"]["repeat"]
for i in range(0, len(llama), 3):
    q = llama[i]
    pp = [json.load(open(f"{llama[i + 1]}{r}.json")) for r in range(1, rounds + 1)]
    tg = [json.load(open(f"{llama[i + 2]}{r}.json")) for r in range(1, rounds + 1)]
    pp_ts = statistics.median(x[0]["avg_ts"] for x in pp)
    tg_ts = statistics.median(x[0]["avg_ts"] for x in tg)
    pre = ctx / pp_ts
    print(f"llama.cpp {q} ({pp[0][0].get('build_commit', '?')}): prefill {pre:.4g} s ({pp_ts:.1f} tok/s; "
          f"vl3c {pre / vl3c['prefill_s']:.2f}x), decode at depth {tg[0][0].get('n_depth', ctx)} "
          f"{tg_ts:.3f} tok/s (vl3c {vl3c['decode_tok_s'] / tg_ts:.2f}x); no vision encoder")
lim = vl3c["limits"]
print(f"vl3c bounds: vision {lim['vision_s_bound']:.4g} s, prefill {lim['prefill_s_bound']:.4g} s "
      f"({lim['peak_gflops']:.0f} GFLOP/s), decode {lim['decode_tok_s_bound']:.2f} tok/s "
      f"({lim['bandwidth_gbs']:.1f} GB/s, {lim['decode_bytes_per_token'] / 1e6:.1f} MB/token)")
paired = vl3c["runs"].get("decode_of_bound") or []
if paired:
    print(f"vl3c decode read {100 * vl3c['decode_of_bound']:.1f}% of the bandwidth probed between its steps "
          f"(median of {len(paired)} runs; each run: " + ", ".join(f"{100 * x:.1f}%" for x in paired) + ")")
EOF
echo "JSON and summary in $OUT" >&2
