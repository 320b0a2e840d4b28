#!/usr/bin/env bash
# Build (once) and install llama-cpp-python with flags that are safe on this CPU.
#
# Why a script: the default native build turns on the AMX path, which segfaults at the first eval on
# the CI CPUs; pip caches wheels by sdist, not by CMAKE_ARGS, so a bad wheel would be silently reused.
# We therefore build with --no-cache-dir and keep our own wheel cache keyed by version + flags.
#
# usage: tools/install-llama-cpp.sh PYTHON [cpu|cuda]
set -euo pipefail
PY="${1:?usage: install-llama-cpp.sh PYTHON [cpu|cuda]}"
MODE="${2:-cpu}"
VERSION="0.3.36"

if [ -n "${LLKD_LLAMA_CMAKE_ARGS:-}" ]; then
  ARGS="$LLKD_LLAMA_CMAKE_ARGS"             # the user knows better: take it as given
elif [ "$MODE" = "cuda" ]; then
  ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=on"
else
  ARGS="-DGGML_NATIVE=OFF"
  flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
  has() { [[ "$flags" == *" $1 "* ]]; }
  # AVX-512 without AMX evaluated prompts 1.5-1.8x faster than AVX2 here (ENVIRONMENT.md).
  # Only enable what this CPU reports, or the binary dies with an illegal instruction.
  if has avx512f && has avx512bw && has avx512dq && has avx512vl; then
    ARGS="$ARGS -DGGML_AVX512=ON"
    has avx512vbmi && ARGS="$ARGS -DGGML_AVX512_VBMI=ON"
    has avx512_vnni && ARGS="$ARGS -DGGML_AVX512_VNNI=ON"
    has avx512_bf16 && ARGS="$ARGS -DGGML_AVX512_BF16=ON"
  fi
  has avx_vnni && ARGS="$ARGS -DGGML_AVX_VNNI=ON"
  ARGS="$ARGS -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
fi

KEY="$(printf '%s|%s|%s' "$VERSION" "$ARGS" "$("$PY" -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-16)"
CACHE="${LLKD_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llkd-edge/wheels}/llama-cpp-python-$VERSION-$KEY"

if ! ls "$CACHE"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION with CMAKE_ARGS='$ARGS' (4-7 minutes on 2 cores) ..."
  tmp="$CACHE.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  CMAKE_ARGS="$ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PY" -m pip wheel --no-cache-dir --no-deps "llama-cpp-python==$VERSION" -w "$tmp"
  echo "$ARGS" > "$tmp/CMAKE_ARGS"
  rm -rf "$CACHE"; mv "$tmp" "$CACHE"
else
  echo "llama-cpp-python $VERSION: reusing wheel built with CMAKE_ARGS='$(cat "$CACHE/CMAKE_ARGS")'"
fi
"$PY" -m pip install --no-deps --force-reinstall --quiet "$CACHE"/llama_cpp_python-*.whl
