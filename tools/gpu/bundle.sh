#!/usr/bin/env bash
# Prepares, on the CPU machine, everything tools/gpu/check.sh needs on a GPU machine that has the
# NVIDIA driver, Python with PyTorch and the CUDA wheels, and nothing else (no Rust toolchain):
#
#   bash tools/gpu/bundle.sh [--vl3c target/release/vl3c] [--out target/gpu-bundle] [--sm 90]
#
# Builds nothing itself (run `cargo build --release` first). Writes into --out:
#   bin/vl3c.gz            the release binary, gzipped (21 MB → 7 MB)
#   engines.tar.gz         CUDA engines (`vl3c compile --target cuda --sm SM`) of every fixture in
#                          tests/fixtures/models and of examples/tiny, under engines/<name>/
#   probe/tiny/            a text-only prompt for examples/tiny and the reference executor's
#                          outputs for it (inputs/expected.safetensors, meta.json): the probe's
#                          first GPU run is compared with them
#   sanitizer/*.whl        NVIDIA's compute-sanitizer wheel (nvidia-cuda-sanitizer-api, pinned to
#                          CUDA 13.0 like NVRTC), downloaded once into ~/.cache/vl3c/sanitizer;
#                          --no-sanitizer leaves it out (the check then looks for one on the GPU
#                          machine and records "not available" if there is none)
#   bundle.json            what is in the bundle: binary version and sha256, the flags it has,
#                          engines, sizes, the commit it was made at
# The 2B engine is not bundled (about 12 GB with its checkpoint): check.sh makes a random 2B
# checkpoint and compiles it on the GPU machine, with the carried binary and the NVRTC of the
# machine's CUDA wheels.
#
# Fails when the bundle exceeds --max-mib (default 64: what the device tool carries), and warns
# when the bundle plus the repository's tracked files exceed it.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VL3C="$ROOT/target/release/vl3c"
OUT_DIR="$ROOT/target/gpu-bundle"
SM=90
MAX_MIB=64
SANITIZER=1
SANITIZER_WHEEL_VERSION=13.0.85
PYTHON="${PYTHON:-python3}"

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --no-sanitizer) SANITIZER=0; shift; continue ;;
    esac
    [[ $# -ge 2 ]] || { echo "error: $1 needs a value" >&2; exit 2; }
    case $1 in
        --vl3c) VL3C=$2 ;;
        --out) OUT_DIR=$2 ;;
        --sm) SM=$2 ;;
        --max-mib) MAX_MIB=$2 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done

die() { echo "bundle: $*" >&2; exit 1; }

[[ -x $VL3C ]] || die "no vl3c binary at $VL3C (cargo build --release, or --vl3c PATH)"
command -v "$PYTHON" >/dev/null || die "needs $PYTHON (PYTHON=…)"
mkdir -p "$(dirname "$OUT_DIR")"
OUT_DIR="$(cd "$(dirname "$OUT_DIR")" && pwd)/$(basename "$OUT_DIR")"
case $OUT_DIR in
    "$ROOT" | "$ROOT/" | / | "$HOME") die "refusing to use $OUT_DIR as the bundle directory" ;;
esac

rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR/bin" "$OUT_DIR/probe/tiny"
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/vl3c-bundle.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/engines"

# One snapshot of the binary for everything below: a build finishing meanwhile must not give a
# bundle whose engines, flags and carried binary come from different builds.
BUILT="$VL3C"
cp "$BUILT" "$STAGE/vl3c" || die "cannot copy $BUILT"
VL3C="$STAGE/vl3c"
VERSION="$("$VL3C" --version 2>&1)" || die "$BUILT does not run: $VERSION"

echo "== $VERSION ($BUILT) → $OUT_DIR" >&2

# The flags check.sh needs that were added after this script: recorded, so that a bundle made
# with an older binary says so up front instead of failing stage by stage on the GPU machine.
has_flag() { "$VL3C" "$1" --help 2>/dev/null | grep -q -- "$2"; }
FLAGS=()
for pair in "eval --device" "bench --device" "run --device"; do
    # shellcheck disable=SC2086
    if has_flag $pair; then FLAGS+=("$pair=yes"); else FLAGS+=("$pair=no"); fi
done

# Engines: every fixture, and examples/tiny.
MODELS=()
for dir in "$ROOT"/tests/fixtures/models/*/; do
    [[ -f $dir/config.json ]] && MODELS+=("${dir%/}")
done
MODELS+=("$ROOT/examples/tiny")
COMPILE_LOG="$OUT_DIR/compile.log"
: >"$COMPILE_LOG"
for model in "${MODELS[@]}"; do
    name="$(basename "$model")"
    echo "== compile --target cuda --sm $SM $name" >&2
    if ! "$VL3C" compile --target cuda --sm "$SM" --model "$model" --out "$STAGE/engines/$name" >>"$COMPILE_LOG" 2>&1; then
        tail -20 "$COMPILE_LOG" >&2
        die "compiling $name failed (log above; NVRTC missing? run tools/cuda/install-nvrtc.sh)"
    fi
done
tar -C "$STAGE" -czf "$OUT_DIR/engines.tar.gz" engines || die "tar failed"

# The probe's prompt for examples/tiny (text only: ids below its special tokens) and what the
# reference executor answers, so the first GPU run is checked against something.
echo "== probe prompt for examples/tiny (reference executor)" >&2
PROBE="$OUT_DIR/probe/tiny"
ROOT_DIR="$ROOT" "$PYTHON" - "$PROBE" <<'EOF' || die "writing the probe inputs failed"
import json, os, sys
sys.path.insert(0, os.path.join(os.environ.get("ROOT_DIR", "."), "tools", "gpu"))
import st
out = sys.argv[1]
ids = [11, 57, 203, 9, 140, 77, 310, 42, 18, 255, 96, 401, 5, 66, 188, 23]
st.write(os.path.join(out, "inputs.safetensors"), {"input_ids": ("I64", [1, len(ids)], ids)})
json.dump({"description": "examples/tiny, 16 text ids, outputs of `vl3c eval --model` (reference executor) on the CPU machine",
           "weights_dtype": "float32", "max_new_tokens": 4}, open(os.path.join(out, "meta.json"), "w"), indent=2)
EOF
"$VL3C" eval --model "$ROOT/examples/tiny" --inputs "$PROBE/inputs.safetensors" --out "$PROBE/expected.safetensors" \
    --max-new-tokens 4 >>"$COMPILE_LOG" 2>&1 || die "reference eval of examples/tiny failed (see $COMPILE_LOG)"

# The binary, gzipped.
gzip -9 -c "$VL3C" >"$OUT_DIR/bin/vl3c.gz" || die "gzip failed"

# compute-sanitizer: NVIDIA's wheel holds the standalone tool (bin/compute-sanitizer and its
# libraries); 13.0 to match the GPU machine's CUDA 13.0 driver.
SANITIZER_NOTE="left out (--no-sanitizer)"
if [[ $SANITIZER == 1 ]]; then
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/vl3c/sanitizer/$SANITIZER_WHEEL_VERSION"
    first_wheel() { compgen -G "$cache/nvidia_cuda_sanitizer_api-*.whl" | head -1; }
    wheel="$(first_wheel)"
    if [[ -z $wheel ]]; then
        echo "== download nvidia-cuda-sanitizer-api==$SANITIZER_WHEEL_VERSION → $cache" >&2
        mkdir -p "$cache"
        if "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$cache" \
            "nvidia-cuda-sanitizer-api==$SANITIZER_WHEEL_VERSION" >"$cache/pip.log" 2>&1; then
            wheel="$(first_wheel)"
        else
            cat "$cache/pip.log" >&2
        fi
    fi
    if [[ -n $wheel ]]; then
        mkdir -p "$OUT_DIR/sanitizer"
        cp "$wheel" "$OUT_DIR/sanitizer/"
        SANITIZER_NOTE="$(basename "$wheel")"
    else
        SANITIZER_NOTE="download failed: the check looks for compute-sanitizer on the GPU machine"
        echo "bundle: warning: no compute-sanitizer wheel ($SANITIZER_NOTE)" >&2
    fi
fi

BUNDLE_BYTES="$(du -sb "$OUT_DIR" | cut -f1)"
TRACKED_BYTES="$(cd "$ROOT" && git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)"
ROOT_DIR="$ROOT" BUILT="$BUILT" "$PYTHON" - "$OUT_DIR" "$VL3C" "$VERSION" "$SM" "$SANITIZER_NOTE" "$BUNDLE_BYTES" "${TRACKED_BYTES:-0}" "${FLAGS[@]}" <<'EOF' || die "writing bundle.json failed"
import hashlib, json, os, subprocess, sys, time
out, vl3c, version, sm, sanitizer, bundle_bytes, tracked_bytes, *flags = sys.argv[1:]
root = os.environ["ROOT_DIR"]
def git(*args):
    try:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
h = hashlib.sha256()
with open(vl3c, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
engines = []
with open(os.path.join(out, "compile.log")) as log:
    for line in log:
        if line.startswith("compile: "):
            engines.append(line.strip())
info = {
    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "commit": git("rev-parse", "HEAD"),
    "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    "vl3c": {"path": os.environ["BUILT"], "version": version, "sha256": h.hexdigest(), "bytes": os.path.getsize(vl3c),
             "flags": dict(f.rsplit("=", 1) for f in flags)},
    "sm": sm,
    "engines": engines,
    "sanitizer": sanitizer,
    "bundle_bytes": int(bundle_bytes),
    "tracked_files_bytes": int(tracked_bytes),
}
json.dump(info, open(os.path.join(out, "bundle.json"), "w"), indent=2)
EOF

MIB=$((1024 * 1024))
awk -v b="$BUNDLE_BYTES" -v t="${TRACKED_BYTES:-0}" -v m="$MAX_MIB" -v d="$OUT_DIR" 'BEGIN {
    printf "bundle: %s, %.1f MiB (limit %d MiB); with the tracked files (%.1f MiB): %.1f MiB\n", d, b / 1048576, m, t / 1048576, (b + t) / 1048576
}' >&2
for f in "${FLAGS[@]}"; do
    [[ $f == *=no ]] && echo "bundle: warning: this vl3c lacks \`${f%=no}\`: the check's stages that need it will be skipped" >&2
done
((BUNDLE_BYTES <= MAX_MIB * MIB)) || die "the bundle is over $MAX_MIB MiB"
if ((BUNDLE_BYTES + ${TRACKED_BYTES:-0} > MAX_MIB * MIB)); then
    echo "bundle: warning: bundle + tracked files exceed $MAX_MIB MiB (--no-sanitizer saves 14 MB)" >&2
fi
echo "$OUT_DIR"
