#!/usr/bin/env bash
# The GPU check, sized for a short GPU window (7 minutes). Runs on the GPU machine from the
# repository root, with the bundle made by tools/gpu/bundle.sh on the CPU machine:
#
#   bash tools/gpu/check.sh [--dry-run] [--stages a,b,…] [--fresh] [--bundle DIR] [--out DIR]
#                           [--work DIR] [--budget SECONDS]
#
# Stages, each under its own time limit, each one's output in OUT/logs/STAGE.log; a stage that
# fails does not stop the ones after it (only a binary that cannot run at all ends the check):
#   probe         nvidia-smi; the engines' cubins loaded through libcuda (tools/gpu/probe.py);
#                 examples/tiny run with `vl3c eval --device cuda` against the reference outputs
#   test_kernels  `vl3c test-kernels --backend cuda --json`: every kernel template, every case
#   sanitizer     compute-sanitizer memcheck and racecheck on one small fixture eval
#   fixtures      every fixture's engine on the GPU against transformers' expected outputs
#                 (tools/gpu/compare.py: f32 max |Δ| <= 1e-4 and same ids; bf16 max <= 0.1,
#                 mean <= 0.015)
#   model_2b      (in the background, beside the three stages before) a random 2B checkpoint
#                 (tools/gpu/random_checkpoint.py), its CUDA engine, and 180 video frames
#   bench         `vl3c bench --device cuda --json` on the 2B engine beside
#                 tools/bench/pytorch_bench.py --device cuda (bf16, sdpa), same shapes (448² image,
#                 300-token prefill, 32 decode tokens); time to first token of a 180-frame video
#                 at 1 fps with and without pruning (`vl3c run --device cuda`)
# Writes OUT/check.json: per stage status (pass, fail, timeout, skipped), seconds, budget, reason
# and figures, and a summary; `overall` is pass, fail or incomplete (something skipped).
#
# --dry-run (on a CPU machine) skips what needs a GPU and runs the rest of the plumbing instead:
# test-kernels on the emulator, fixtures on the emulator (`eval --device emu`) or, with a binary
# that lacks --device, the reference executor, a small random checkpoint in place of the 2B one,
# the benches on the CPU at small shapes; every limit ×4. --stages runs only the stages named
# (the others are recorded as skipped); --fresh remakes the 2B checkpoint and engine even when
# an earlier run left them in the work directory.
#
# Environment: OUT (default target/gpu-out), VL3C_GPU_WORK (big files; default
# target/gpu-work, kept between runs so a rerun reuses the 2B engine), PYTHON (default: the first
# of python3, python that imports torch), CHECK_BUDGET_S (default 420).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SELF="$ROOT/tools/gpu/check.sh"
GPU_TOOLS="$ROOT/tools/gpu"

# Per-stage limits, in seconds. model_2b runs beside test_kernels, sanitizer and fixtures, so the
# worst case is probe + max(test_kernels + sanitizer + fixtures, model_2b) + bench = 345 s, plus
# a few seconds of setup: under CHECK_BUDGET_S, which also caps every stage at what is left.
declare -A BUDGET=([setup]=30 [probe]=20 [test_kernels]=60 [sanitizer]=60 [fixtures]=45 [model_2b]=150 [bench]=160)
STAGES=(probe test_kernels sanitizer fixtures model_2b bench)

if [[ ${1:-} == --run-stage ]]; then
    RUN_STAGE=$2
else
    RUN_STAGE=""
    BUNDLE="${VL3C_GPU_BUNDLE:-$ROOT/target/gpu-bundle}"
    OUT="${OUT:-$ROOT/target/gpu-out}"
    WORK="${VL3C_GPU_WORK:-$ROOT/target/gpu-work}"
    CHECK_BUDGET_S="${CHECK_BUDGET_S:-420}"  # ×4 in the dry run, like every limit
    DRY_RUN=0
    FRESH=0
    SELECTED="${STAGES[*]}"
    while [[ $# -gt 0 ]]; do
        case $1 in
            -h | --help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
            --dry-run) DRY_RUN=1; shift; continue ;;
            --fresh) FRESH=1; shift; continue ;;
        esac
        [[ $# -ge 2 ]] || { echo "error: $1 needs a value" >&2; exit 2; }
        case $1 in
            --bundle) BUNDLE=$2 ;;
            --out) OUT=$2 ;;
            --work) WORK=$2 ;;
            --budget) CHECK_BUDGET_S=$2 ;;
            --stages) SELECTED="${2//,/ }" ;;
            *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        esac
        shift 2
    done
    mkdir -p "$OUT" "$WORK"
    BUNDLE="$(cd "$BUNDLE" 2>/dev/null && pwd)" || { echo "error: no bundle directory (run tools/gpu/bundle.sh on the CPU machine)" >&2; exit 2; }
    OUT="$(cd "$OUT" && pwd)"
    WORK="$(cd "$WORK" && pwd)"
    MODE=gpu SLOW=1
    if [[ $DRY_RUN == 1 ]]; then
        MODE=dry-run SLOW=4
        CHECK_BUDGET_S=$((CHECK_BUDGET_S * SLOW))
        for b in "${!BUDGET[@]}"; do BUDGET[$b]=$((BUDGET[$b] * SLOW)); done
    fi
    export BUNDLE OUT WORK DRY_RUN FRESH MODE CHECK_BUDGET_S SLOW
fi

now() { date +%s.%N; }
elapsed_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "== [$(date +%T)] $*"; }

# step LIMIT OUTFILE CMD...: runs CMD under `timeout`, its stdout to OUTFILE ('-': the log;
# '&FILE': stdout and stderr to FILE), and logs the command line, exit status and seconds.
# LIMIT is scaled by SLOW (4 in the dry run: the emulator and a 2-core machine), unless written
# `=N`. Returns CMD's status (124: timed out).
step() {
    local limit=$1 out=$2 t0 rc
    shift 2
    if [[ $limit == =* ]]; then limit=${limit#=}; else limit=$((limit * SLOW)); fi
    log "(≤${limit}s) $*"
    t0=$(now)
    if [[ $out == - ]]; then
        timeout -k 5 "$limit" "$@"
    elif [[ $out == '&'* ]]; then
        timeout -k 5 "$limit" "$@" >"${out#&}" 2>&1
    else
        timeout -k 5 "$limit" "$@" >"$out"
    fi
    rc=$?
    log "exit $rc after $(elapsed_since "$t0") s"
    return $rc
}

# In a stage: its figures directory, and how to end it skipped.
stage_dir() { echo "$OUT/stages/$1"; }
skip() { echo "$*" >"$S/_reason.txt"; log "skipped: $*"; exit 3; }
note() { echo "$*" >>"$S/_notes.txt"; log "note: $*"; }
json_str() { "$PYTHON" -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }
has_flag() { "$VL3C" "$1" --help 2>/dev/null | grep -q -- "$2"; }
sm() { cat "$WORK/sm" 2>/dev/null || echo 90; }

# ---------------------------------------------------------------------------------------------
# Stages. Each runs as `check.sh --run-stage NAME` under `timeout`; exit 0 pass, 3 skipped
# (reason in _reason.txt), anything else fail. Figures: *.json files in its stage directory.

stage_probe() {
    local ok=0 rc
    if [[ $DRY_RUN == 1 ]]; then
        note "dry run: nvidia-smi and the GPU runs skipped"
    elif command -v nvidia-smi >/dev/null; then
        step 10 - nvidia-smi || ok=1
        if step 10 "$WORK/nvidia_smi.csv" nvidia-smi --format=csv,noheader,nounits \
            --query-gpu=name,driver_version,compute_cap,memory.total,clocks.max.sm,power.limit; then
            "$PYTHON" "$GPU_TOOLS/report.py" nvidia-smi "$WORK/nvidia_smi.csv" >"$S/nvidia_smi.json"
            "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("sm", ""))' "$S/nvidia_smi.json" >"$WORK/sm.new"
            [[ -s $WORK/sm.new ]] && mv "$WORK/sm.new" "$WORK/sm"
        else
            ok=1
        fi
    else
        note "nvidia-smi not found"
        ok=1
    fi

    # The cubins through libcuda alone (exit 3: no driver, expected in the dry run).
    step 15 "$S/cubins.json" "$PYTHON" "$GPU_TOOLS/probe.py" --ptx "$ENGINES"/tiny "$ENGINES"/*/
    rc=$?
    if [[ $rc == 3 && $DRY_RUN == 1 ]]; then :; elif [[ $rc != 0 ]]; then ok=1; fi

    # vl3c itself: examples/tiny on the device, against the reference outputs made in the bundle.
    local probe="$BUNDLE/probe/tiny" src
    if [[ $DRY_RUN == 1 ]]; then
        if has_flag eval --device; then src=(--engine "$ENGINES/tiny" --device emu); else src=(--model "$ROOT/examples/tiny"); fi
    elif has_flag eval --device; then
        src=(--engine "$ENGINES/tiny" --device cuda)
    else
        note "vl3c eval has no --device: the binary predates running CUDA engines"
        return 1
    fi
    step 15 "&$WORK/probe_tiny.log" "$VL3C" eval "${src[@]}" --inputs "$probe/inputs.safetensors" \
        --out "$WORK/probe_tiny.safetensors" --max-new-tokens 4
    rc=$?
    cat "$WORK/probe_tiny.log"
    if [[ $rc != 0 ]]; then
        echo "{\"fixture\": \"tiny\", \"pass\": false, \"error\": $(json_str "vl3c eval exit $rc: $(tail -1 "$WORK/probe_tiny.log")")}" >"$S/tiny_eval.json"
        return 1
    fi
    step 10 "$S/tiny_eval.json" "$PYTHON" "$GPU_TOOLS/compare.py" --fixture "$probe" --got "$WORK/probe_tiny.safetensors" --name tiny || ok=1
    return $ok
}

stage_test_kernels() {
    # In a few runs of consecutive op families rather than one: `test-kernels --json` prints
    # only at the end, so a run cut off by the time limit loses only its own chunk.
    local backend=cuda chunks=6 i=0 rc=0 chunk left
    [[ $DRY_RUN == 1 ]] && backend=emu
    echo "{\"backend\": \"$backend\"}" >"$S/backend.json"
    "$VL3C" test-kernels --list >"$WORK/test_kernels_cases.txt" || return 1
    mapfile -t CHUNKS < <("$PYTHON" "$GPU_TOOLS/report.py" test-kernels-chunks "$WORK/test_kernels_cases.txt" "$chunks")
    rm -f "$OUT"/raw/test_kernels_*.json
    for chunk in "${CHUNKS[@]}"; do
        i=$((i + 1))
        left=$(awk -v t0="$STAGE_T0" -v l="$STAGE_LIMIT" -v n="$(now)" 'BEGIN { printf "%d", l - 3 - (n - t0) }')
        if ((left < 3)); then
            echo "{\"ops\": \"$chunk\", \"unfinished\": \"out of time\"}" >"$OUT/raw/test_kernels_$i.json"
            rc=124
            continue
        fi
        step "=$left" "$OUT/raw/test_kernels_$i.json" "$VL3C" test-kernels --backend "$backend" --op "$chunk" --json
        case $? in
            0) ;;
            124 | 137) rc=124; echo "{\"ops\": \"$chunk\", \"unfinished\": \"timed out\"}" >"$OUT/raw/test_kernels_$i.json" ;;
            *) [[ $rc == 0 ]] && rc=1
               [[ -s $OUT/raw/test_kernels_$i.json ]] || echo "{\"ops\": \"$chunk\", \"unfinished\": \"exited without a report (see the log)\"}" >"$OUT/raw/test_kernels_$i.json" ;;
        esac
    done
    "$PYTHON" "$GPU_TOOLS/report.py" test-kernels "$OUT"/raw/test_kernels_*.json >"$S/summary.json" || rc=1
    return $rc
}

find_sanitizer() {
    local c
    for c in "${COMPUTE_SANITIZER:-}" "$WORK/sanitizer/nvidia/cu13/bin/compute-sanitizer" "$(command -v compute-sanitizer)" \
        /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
        [[ -n $c && -x $c ]] && { echo "$c"; return 0; }
    done
    "$PYTHON" - <<'EOF'
import glob, os, site
for d in site.getsitepackages() + [site.getusersitepackages()]:
    for p in glob.glob(os.path.join(d, "nvidia", "*", "bin", "compute-sanitizer")):
        if os.access(p, os.X_OK):
            print(p)
            raise SystemExit(0)
raise SystemExit(1)
EOF
}

stage_sanitizer() {
    local tool san fixture=video_pruned_f32
    san="$(find_sanitizer)" || { echo '{"available": false}' >"$S/tool.json"; skip "compute-sanitizer not available (not in the bundle, PATH, /usr/local/cuda or the CUDA wheels)"; }
    step 10 - "$san" --version
    echo "{\"available\": true, \"path\": $(json_str "$san"), \"fixture\": \"$fixture\"}" >"$S/tool.json"
    [[ $DRY_RUN == 1 ]] && skip "dry run: compute-sanitizer found and runs; the GPU runs skipped"
    has_flag eval --device || skip "vl3c eval has no --device: nothing to run on the GPU"
    local fx="$ROOT/tests/fixtures/models/$fixture" n ok=0
    n="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["max_new_tokens"])' "$fx/meta.json")"
    for tool in memcheck racecheck; do
        step 28 - "$san" --tool "$tool" --error-exitcode 86 --print-limit 50 --log-file "$OUT/raw/sanitizer_$tool.txt" \
            "$VL3C" eval --engine "$ENGINES/$fixture" --inputs "$fx/inputs.safetensors" --out "$WORK/sanitizer_$tool.safetensors" \
            --max-new-tokens "$n" --device cuda
        local rc=$?
        if [[ -f $OUT/raw/sanitizer_$tool.txt ]]; then
            "$PYTHON" "$GPU_TOOLS/report.py" sanitizer "$OUT/raw/sanitizer_$tool.txt" >"$S/$tool.json"
        fi
        [[ $rc == 0 ]] || ok=1
        # Still the right answer under the tool (informational: the fixtures stage is the bar).
        [[ -f $WORK/sanitizer_$tool.safetensors ]] && "$PYTHON" "$GPU_TOOLS/compare.py" --fixture "$fx" \
            --got "$WORK/sanitizer_$tool.safetensors" >"$S/${tool}_outputs.json"
    done
    return $ok
}

stage_fixtures() {
    local fx name n src ok=0 count=0
    mkdir -p "$WORK/fixtures"
    if [[ $DRY_RUN == 0 ]] && ! has_flag eval --device; then
        skip "vl3c eval has no --device: the binary predates running CUDA engines"
    fi
    for fx in "$ROOT"/tests/fixtures/models/*/; do
        fx="${fx%/}"
        name="$(basename "$fx")"
        [[ -f $fx/expected.safetensors && -d $ENGINES/$name ]] || continue
        count=$((count + 1))
        n="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["max_new_tokens"])' "$fx/meta.json")"
        if [[ $DRY_RUN == 1 ]]; then
            if has_flag eval --device; then src=(--engine "$ENGINES/$name" --device emu); else src=(--model "$fx"); fi
        else
            src=(--engine "$ENGINES/$name" --device cuda)
        fi
        rm -f "$WORK/fixtures/$name.safetensors"
        step 15 "&$WORK/fixtures/$name.log" "$VL3C" eval "${src[@]}" --inputs "$fx/inputs.safetensors" \
            --out "$WORK/fixtures/$name.safetensors" --max-new-tokens "$n"
        local rc=$?
        cat "$WORK/fixtures/$name.log"
        if [[ $rc == 0 ]]; then
            step 10 "$S/$name.json" "$PYTHON" "$GPU_TOOLS/compare.py" --fixture "$fx" --got "$WORK/fixtures/$name.safetensors" || ok=1
        else
            echo "{\"fixture\": \"$name\", \"pass\": false, \"error\": $(json_str "vl3c eval exit $rc: $(tail -1 "$WORK/fixtures/$name.log")")}" >"$S/$name.json"
            ok=1
        fi
    done
    [[ $count -gt 0 ]] || { note "no fixture engines"; return 1; }
    [[ $DRY_RUN == 1 ]] && ! has_flag eval --device && note "dry run: fixtures on the reference executor (eval --model), engines not run"
    return $ok
}

stage_model_2b() {
    # A random 2B checkpoint and its CUDA engine, and the video frames; kept in WORK and reused
    # by a rerun with the same binary and SM (--fresh remakes them).
    local config="$ROOT/examples/configs/videollama3-2b/config.json" ckpt="$WORK/vl3-2b" engine="$WORK/engine-2b"
    local frames="$WORK/frames180" nframes=180 width=640 height=360
    if [[ $DRY_RUN == 1 ]]; then
        config="$GPU_TOOLS/small_config.json" ckpt="$WORK/small" engine="$WORK/engine-small"
        frames="$WORK/frames12" nframes=12 width=320 height=180
    fi
    local stamp
    stamp="$(sha256sum "$BUNDLE/bin/vl3c.gz" | cut -c1-16) sm$(sm) $(sha256sum "$config" | cut -c1-16)"
    local reusable=0
    [[ $FRESH == 0 && -f $engine/manifest.json && "$(cat "$engine.stamp" 2>/dev/null)" == "$stamp" ]] \
        && [[ -f $frames/frame_$(printf %04d $nframes).png ]] \
        && [[ $DRY_RUN == 0 || -f $engine-cpu/manifest.json ]] && reusable=1
    if [[ $reusable == 1 ]]; then
        note "reusing $engine and $frames from an earlier run ($stamp)"
        echo "{\"reused\": true, \"engine\": $(json_str "$engine")}" >"$S/engine.json"
        return 0
    fi
    rm -rf "$ckpt" "$engine" "$engine-cpu" "$engine.stamp" "$frames"
    step 30 - "$PYTHON" "$GPU_TOOLS/make_frames.py" --out "$frames" --frames "$nframes" --width "$width" --height "$height" || return 1
    step 60 "$S/checkpoint.json" "$PYTHON" "$GPU_TOOLS/random_checkpoint.py" --config "$config" --out "$ckpt" || return 1
    step 120 "&$WORK/compile_2b.log" "$VL3C" compile --target cuda --sm "$(sm)" --threads 12 --model "$ckpt" --out "$engine"
    local rc=$?
    cat "$WORK/compile_2b.log"
    "$PYTHON" "$GPU_TOOLS/report.py" compile "$WORK/compile_2b.log" >"$S/compile.json"
    [[ $rc == 0 ]] || return 1
    if [[ $DRY_RUN == 1 ]]; then
        # The CPU engine of the same checkpoint: what the dry run benches and asks about the video.
        step 60 - "$VL3C" compile --target cpu --model "$ckpt" --out "$engine-cpu" || return 1
    fi
    echo "{\"reused\": false, \"engine\": $(json_str "$engine"), \"engine_bytes\": $(du -sb "$engine" | cut -f1)}" >"$S/engine.json"
    echo "$stamp" >"$engine.stamp"
    # The checkpoint is not needed past the compile (the engine holds the weights): free the disk.
    rm -rf "$ckpt"
}

stage_bench() {
    local engine="$WORK/engine-2b" frames="$WORK/frames180" config="$ROOT/examples/configs/videollama3-2b/config.json"
    local shapes=(--image-size 448 --context 300 --decode-tokens 32 --warmup 1 --repeat 3)
    local device=(--device cuda) torch_device=cuda ok=0 skipped=()
    if [[ $DRY_RUN == 1 ]]; then
        engine="$WORK/engine-small-cpu" frames="$WORK/frames12" config="$GPU_TOOLS/small_config.json"
        shapes=(--image-size 56 --context 16 --decode-tokens 4 --warmup 0 --repeat 1)
        device=() torch_device=cpu
    fi
    [[ -f $engine/manifest.json ]] || skip "no 2B engine (the model_2b stage did not finish)"
    mkdir -p "$OUT/raw"

    # vl3c
    if [[ $DRY_RUN == 1 ]] || has_flag bench --device; then
        step 50 "$OUT/raw/bench_vl3c.json" "$VL3C" bench --engine "$engine" "${device[@]}" "${shapes[@]}" --json || ok=1
    else
        skipped+=("vl3c bench: no --device flag")
    fi

    # PyTorch, same shapes, bf16 with sdpa.
    if "$PYTHON" -c "import torch, transformers" 2>/dev/null; then
        step 55 "$OUT/raw/bench_pytorch.json" "$PYTHON" "$ROOT/tools/bench/pytorch_bench.py" --device "$torch_device" \
            --config "$config" --dtype bf16 "${shapes[@]}" || ok=1
    else
        skipped+=("pytorch: torch/transformers not importable by $PYTHON")
    fi
    "$PYTHON" "$GPU_TOOLS/report.py" bench "$OUT/raw/bench_vl3c.json" "$OUT/raw/bench_pytorch.json" >"$S/comparison.json"

    # Time to first token, 180 frames at 1 fps, with and without Differential Frame Pruning.
    if [[ $DRY_RUN == 1 ]] || has_flag run --device; then
        local mode extra
        for mode in prune no_prune; do
            extra=()
            [[ $mode == no_prune ]] && extra=(--no-prune)
            step 25 "$WORK/run_$mode.out" "$VL3C" run --engine "$engine" "${device[@]}" --video "$frames" --frame-rate 1 --fps 1 \
                --max-new-tokens 1 --prompt "What happens in this video?" --prompt "What color is the ball?" "${extra[@]}" \
                2>"$WORK/run_$mode.err" || ok=1
            cat "$WORK/run_$mode.err"
            "$PYTHON" "$GPU_TOOLS/report.py" ttft "$WORK/run_$mode.err" >"$S/video_$mode.json"
        done
    else
        skipped+=("video TTFT: vl3c run has no --device")
        echo '{"measured": false, "reason": "vl3c run has no --device flag"}' >"$S/video_prune.json"
    fi
    if [[ ${#skipped[@]} -gt 0 ]]; then
        local s
        for s in "${skipped[@]}"; do note "not measured: $s"; done
        [[ $ok == 0 ]] && skip "not measured: ${skipped[*]}"
    fi
    return $ok
}

if [[ -n $RUN_STAGE ]]; then
    S="$(stage_dir "$RUN_STAGE")"
    STAGE_T0=$(now)
    "stage_$RUN_STAGE"
    exit $?
fi

# ---------------------------------------------------------------------------------------------
# The driver.

CHECK_T0=$(now)
remaining() { awk -v t0="$CHECK_T0" -v b="$CHECK_BUDGET_S" -v n="$(now)" 'BEGIN { r = b - (n - t0); printf "%d", (r > 0 ? r : 0) }'; }

rm -rf "$OUT/stages" "$OUT/logs" "$OUT/raw" "$OUT/check.json"
mkdir -p "$OUT/stages" "$OUT/logs" "$OUT/raw"

# record NAME STATUS RC SECONDS LIMIT STARTED [REASON]
record() {
    local dir reason=${7:-}
    dir="$(stage_dir "$1")"
    mkdir -p "$dir"
    [[ -z $reason && -f $dir/_reason.txt ]] && reason="$(head -c 500 "$dir/_reason.txt")"
    local notes="[]"
    [[ -f $dir/_notes.txt ]] && notes="$("$PYTHON" -c 'import json, sys; print(json.dumps(open(sys.argv[1]).read().splitlines()))' "$dir/_notes.txt")"
    "$PYTHON" - "$dir/_stage.json" "$1" "$2" "$3" "$4" "$5" "$6" "$reason" "$notes" <<'EOF'
import json, sys
path, name, status, rc, seconds, limit, started, reason, notes = sys.argv[1:]
json.dump({"name": name, "status": status, "rc": int(rc) if rc.lstrip("-").isdigit() else None, "seconds": float(seconds),
           "budget_s": int(limit), "started": float(started), "reason": reason or None, "notes": json.loads(notes),
           "log": f"logs/{name}.log"}, open(path, "w"), indent=2)
EOF
    printf '%-13s %-8s %6ss  (limit %ss)%s\n' "$1" "$2" "$4" "$5" "${reason:+  $reason}" >&2
}

status_of_rc() {
    case $1 in
        0) echo pass ;;
        3) echo skipped ;;
        124 | 137) echo timeout ;;
        *) echo fail ;;
    esac
}

selected() { [[ " $SELECTED " == *" $1 "* ]]; }

stage_limit() {
    local left
    left=$(remaining)
    ((left < ${BUDGET[$1]})) && echo "$left" || echo "${BUDGET[$1]}"
}

# run_stage NAME: in the foreground.
run_stage() {
    local name=$1 limit t0 rc
    mkdir -p "$(stage_dir "$name")"
    if ! selected "$name"; then record "$name" skipped 3 0 0 "$(now)" "not selected (--stages)"; return; fi
    limit=$(stage_limit "$name")
    if ((limit < 5)); then record "$name" skipped 3 0 0 "$(now)" "out of time (check budget ${CHECK_BUDGET_S} s)"; return; fi
    t0=$(now)
    STAGE_LIMIT=$limit timeout -k 5 "$limit" bash "$SELF" --run-stage "$name" >"$OUT/logs/$name.log" 2>&1
    rc=$?
    record "$name" "$(status_of_rc "$rc")" "$rc" "$(elapsed_since "$t0")" "$limit" "$t0"
}

# start_stage NAME / finish_stage NAME: in the background.
declare -A BG_PID BG_T0 BG_LIMIT
start_stage() {
    local name=$1 limit
    mkdir -p "$(stage_dir "$name")"
    selected "$name" || return 0
    limit=$(stage_limit "$name")
    ((limit < 5)) && return 0
    BG_T0[$name]=$(now)
    BG_LIMIT[$name]=$limit
    STAGE_LIMIT=$limit timeout -k 5 "$limit" bash "$SELF" --run-stage "$name" >"$OUT/logs/$name.log" 2>&1 &
    BG_PID[$name]=$!
}
finish_stage() {
    local name=$1 rc
    if [[ -z ${BG_PID[$name]:-} ]]; then
        if selected "$name"; then record "$name" skipped 3 0 0 "$(now)" "out of time (check budget ${CHECK_BUDGET_S} s)"
        else record "$name" skipped 3 0 0 "$(now)" "not selected (--stages)"; fi
        return
    fi
    wait "${BG_PID[$name]}"
    rc=$?
    record "$name" "$(status_of_rc "$rc")" "$rc" "$(elapsed_since "${BG_T0[$name]}")" "${BG_LIMIT[$name]}" "${BG_T0[$name]}"
}

# --- setup: unpack the bundle, find Python, NVRTC and the CUDA wheels' libraries --------------
SETUP_T0=$(now)
SETUP_DIR="$(stage_dir setup)"
mkdir -p "$SETUP_DIR"
{
    log "mode $MODE, bundle $BUNDLE, out $OUT, work $WORK, budget ${CHECK_BUDGET_S} s"
    PYTHON_FOUND=""
    for c in ${PYTHON:-} python3 python; do
        if command -v "$c" >/dev/null && "$c" -c "import torch" 2>/dev/null; then PYTHON_FOUND=$c; break; fi
    done
    PYTHON="${PYTHON_FOUND:-${PYTHON:-python3}}"
    log "python: $PYTHON"
    mkdir -p "$WORK/bin"
    { gzip -dc "$BUNDLE/bin/vl3c.gz" || "$PYTHON" -c 'import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), sys.stdout.buffer)' "$BUNDLE/bin/vl3c.gz"; } >"$WORK/bin/vl3c.new" \
        && chmod +x "$WORK/bin/vl3c.new" && mv "$WORK/bin/vl3c.new" "$WORK/bin/vl3c"
    VL3C="$WORK/bin/vl3c"
    rm -rf "$WORK/engines"
    tar -C "$WORK" -xzf "$BUNDLE/engines.tar.gz"
    ENGINES="$WORK/engines"
    wheel="$(compgen -G "$BUNDLE/sanitizer/*.whl" | head -1)"
    if [[ -n $wheel && ! -x $WORK/sanitizer/nvidia/cu13/bin/compute-sanitizer ]]; then
        rm -rf "$WORK/sanitizer"
        "$PYTHON" -m zipfile -e "$wheel" "$WORK/sanitizer" && chmod +x "$WORK/sanitizer/nvidia/cu13/bin/compute-sanitizer"
    fi
    cp "$BUNDLE/bundle.json" "$OUT/bundle.json" 2>/dev/null
    "$PYTHON" "$GPU_TOOLS/report.py" env >"$SETUP_DIR/environment.json"
    # NVRTC for compiling the 2B engine here: the pinned install if present, else the wheels'.
    if [[ -z ${VL3C_CUDA_HOME:-} && ! -f ${XDG_CACHE_HOME:-$HOME/.cache}/vl3c/cuda/13.0.88/nvidia/cu13/lib/libnvrtc.so.13 ]]; then
        home="$("$PYTHON" -c 'import json, sys; h = json.load(open(sys.argv[1]))["nvrtc_homes"]; print(h[0] if h else "")' "$SETUP_DIR/environment.json")"
        [[ -n $home ]] && export VL3C_CUDA_HOME="$home"
    fi
    # The CUDA wheels' libraries (cuBLASLt, the runtime) for vl3c's device code, found by name.
    libs="$("$PYTHON" -c 'import json, sys; print(":".join(json.load(open(sys.argv[1]))["nvidia_lib_dirs"]))' "$SETUP_DIR/environment.json")"
    [[ -n $libs ]] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    log "VL3C_CUDA_HOME=${VL3C_CUDA_HOME:-} LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    VERSION="$("$VL3C" --version 2>&1)"
    VL3C_RC=$?
    log "vl3c: $VERSION (exit $VL3C_RC)"
    for pair in "eval --device" "bench --device" "run --device"; do
        # shellcheck disable=SC2086
        if has_flag $pair; then log "has: $pair"; else log "lacks: $pair"; fi
    done
    cat >"$SETUP_DIR/vl3c.json" <<EOF
{"version": $(json_str "$VERSION"), "runs": $([[ $VL3C_RC == 0 ]] && echo true || echo false),
 "eval_device": $(has_flag eval --device && echo true || echo false),
 "bench_device": $(has_flag bench --device && echo true || echo false),
 "run_device": $(has_flag run --device && echo true || echo false),
 "vl3c_cuda_home": $(json_str "${VL3C_CUDA_HOME:-}"), "python": $(json_str "$PYTHON")}
EOF
} >"$OUT/logs/setup.log" 2>&1
export PYTHON VL3C ENGINES
[[ -n ${VL3C_CUDA_HOME:-} ]] && export VL3C_CUDA_HOME
if [[ ${VL3C_RC:-1} != 0 || ! -d $ENGINES ]]; then
    record setup fail "${VL3C_RC:-1}" "$(elapsed_since "$SETUP_T0")" "${BUDGET[setup]}" "$SETUP_T0" "the vl3c binary does not run or the bundle is incomplete (logs/setup.log)"
    "$PYTHON" "$GPU_TOOLS/report.py" assemble "$OUT" "$MODE" "$CHECK_BUDGET_S" >&2
    exit 2
fi
record setup pass 0 "$(elapsed_since "$SETUP_T0")" "${BUDGET[setup]}" "$SETUP_T0"

# --- the stages --------------------------------------------------------------------------------
run_stage probe
start_stage model_2b
run_stage test_kernels
run_stage sanitizer
run_stage fixtures
finish_stage model_2b
run_stage bench

"$PYTHON" "$GPU_TOOLS/report.py" assemble "$OUT" "$MODE" "$CHECK_BUDGET_S"
echo "check.json: $OUT/check.json" >&2
