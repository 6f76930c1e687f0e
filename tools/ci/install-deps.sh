#!/usr/bin/env bash
# The system packages vl3c builds against: FFmpeg's libraries for video decoding (ffmpeg-next
# generates its bindings with bindgen, hence clang) and pkg-config to find them. Debian/Ubuntu;
# skipped when every package is already installed; sudo only when not root.
# Building with `--no-default-features` (no FFmpeg) needs none of them.
set -euo pipefail
packages=(pkg-config clang libclang-dev libavformat-dev libavcodec-dev libswscale-dev libavutil-dev)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing ${missing[*]} and no apt-get: install FFmpeg's development libraries (libavformat, libavcodec, libswscale, libavutil), clang and pkg-config" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
