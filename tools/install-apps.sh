#!/usr/bin/env bash
# What the app tests need besides Python: the JS packages of examples/node and examples/web (npm ci, from the
# npm registry, exact versions from their package-lock.json) and a Chromium for the browser test (Debian's
# package). Each step that cannot run here says so and is skipped: the tests that need it skip with a reason.
set -uo pipefail
cd "$(dirname "$0")/.."
if command -v npm >/dev/null; then
  for dir in examples/node examples/web; do
    # ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's install script would try to fetch CUDA files
    (cd "$dir" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error) \
      || echo "install-apps: npm ci in $dir failed; its tests will skip" >&2
  done
else
  echo "install-apps: no npm on this machine; the Node and browser tests will skip" >&2
fi
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } \
      || echo "install-apps: apt-get could not install chromium; the browser test will skip" >&2
  else
    echo "install-apps: no chromium and no root apt-get to install it; the browser test will skip" >&2
  fi
fi
exit 0
