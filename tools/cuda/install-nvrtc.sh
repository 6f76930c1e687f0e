#!/usr/bin/env bash
# Installs the pinned NVRTC and CUDA runtime headers that `vl3c-cuda` compiles kernels with, into
# ${VL3C_CUDA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/vl3c/cuda/13.0.88}, where `Nvrtc::load` looks.
# No CUDA toolkit and no GPU needed: the libraries come from NVIDIA's PyPI wheels, and pip serves
# only as a downloader (nothing is installed into any Python environment).
# Idempotent: a complete install is left alone. Prints the directory on success, nothing else.
set -euo pipefail

NVRTC_VERSION=13.0.88
RUNTIME_VERSION=13.0.96
dest="${VL3C_CUDA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/vl3c/cuda/$NVRTC_VERSION}"
lib="$dest/nvidia/cu13/lib/libnvrtc.so.13"
header="$dest/nvidia/cu13/include/cuda_bf16.h"

if [[ -f "$lib" && -f "$header" ]]; then
    echo "$dest"
    exit 0
fi

if python3 -m pip --version >/dev/null 2>&1; then
    pip=(python3 -m pip)
elif command -v pip3 >/dev/null 2>&1; then
    pip=(pip3)
else
    echo "install-nvrtc: needs pip (python3 -m pip or pip3) to download the NVIDIA wheels" >&2
    exit 1
fi

mkdir -p "$dest"
download="$(mktemp -d "$dest/.download.XXXXXX")"
trap 'rm -rf "$download"' EXIT

if ! "${pip[@]}" download --quiet --no-deps --only-binary=:all: --dest "$download" \
    "nvidia-cuda-nvrtc==$NVRTC_VERSION" "nvidia-cuda-runtime==$RUNTIME_VERSION" >"$download/pip.log" 2>&1; then
    cat "$download/pip.log" >&2
    echo "install-nvrtc: downloading the wheels failed (log above)" >&2
    exit 1
fi

for wheel in "$download"/*.whl; do
    python3 -m zipfile -e "$wheel" "$dest"
done

for needed in "$lib" "$header"; do
    if [[ ! -f "$needed" ]]; then
        echo "install-nvrtc: $needed missing after unpacking the wheels" >&2
        exit 1
    fi
done
echo "$dest"
