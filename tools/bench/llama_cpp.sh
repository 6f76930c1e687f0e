#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, CPU only, from a pinned source release and prints its path.
#
#   tools/bench/llama_cpp.sh [--dir DIR]      # default DIR: /tmp/vl3c-llama.cpp (kept; built once)
#
# The source is the llama.cpp that ships inside the llama-cpp-python source package on PyPI
# (the only registry this project's machines reach), fetched with
# `pip download --no-deps --no-binary llama-cpp-python` (not `--no-binary :all:`, which would
# try to build cmake from source); cmake comes from PyPI's `cmake` wheel. Built with
# GGML_NATIVE (this CPU's AVX-512/AMX). Exits non-zero with one line on stderr when it cannot.
set -euo pipefail

VERSION=0.3.36          # llama-cpp-python; its vendor/llama.cpp is the release benchmarked
DIR=/tmp/vl3c-llama.cpp
PYTHON="${PYTHON:-/work/pyenv/bin/python}"
while [[ $# -gt 0 ]]; do
    case $1 in
        --dir) DIR=$2; shift 2 ;;
        *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
done
bench="$DIR/src/vendor/llama.cpp/build/bin/llama-bench"
if [[ -x $bench ]]; then
    echo "$bench"
    exit 0
fi
mkdir -p "$DIR"
fail() { echo "llama.cpp: $*" >&2; exit 1; }
"$PYTHON" -m pip install -q cmake gguf >&2 || fail "cannot install cmake and gguf from PyPI"
cmake="$(dirname "$PYTHON")/cmake"
[[ -x $cmake ]] || cmake="$(command -v cmake)" || fail "no cmake"
if [[ ! -d $DIR/src ]]; then
    "$PYTHON" -m pip download -q --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$VERSION" -d "$DIR" >&2 || fail "cannot download llama-cpp-python $VERSION"
    tar xzf "$DIR/llama_cpp_python-$VERSION.tar.gz" -C "$DIR"
    mv "$DIR/llama_cpp_python-$VERSION" "$DIR/src"
fi
cd "$DIR/src/vendor/llama.cpp"
"$cmake" -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2 \
    || fail "cmake configure failed"
"$cmake" --build build --target llama-bench -j "$(nproc)" >&2 || fail "build failed"
echo "$bench"
