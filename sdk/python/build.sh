#!/bin/sh
# build.sh: builds a Python wasmeca plugin into a WebAssembly component with componentize-py.
#
#   sh <repo>/sdk/python/build.sh <module> [out.wasm]      (run in the plugin's folder)
#
# <module> is the app module (in the current folder) that defines `Guest = export(setup)`; the
# output defaults to dist/<module>.wasm. componentize-py is taken from $COMPONENTIZE_PY, else
# <repo>/target/tools/venv (sdk/toolchains.sh python installs it there), else PATH.
# It runs: componentize-py -d <repo>/wit -w plugin componentize <module> -p . -p <repo>/sdk/python -o <out>
set -eu

[ $# -ge 1 ] || { echo "usage: sh build.sh <module> [out.wasm]" >&2; exit 2; }
module="$1"
out="${2:-dist/$module.wasm}"
sdk="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$sdk/../.." && pwd)"

cpy="${COMPONENTIZE_PY:-}"
if [ -z "$cpy" ]; then
    if [ -x "$root/target/tools/venv/bin/componentize-py" ]; then
        cpy="$root/target/tools/venv/bin/componentize-py"
    elif command -v componentize-py >/dev/null 2>&1; then
        cpy="componentize-py"
    else
        echo "build.sh: componentize-py is not installed; run: $root/sdk/toolchains.sh python" >&2
        exit 1
    fi
fi

mkdir -p "$(dirname "$out")"
start=$(date +%s)
"$cpy" -d "$root/wit" -w plugin componentize "$module" -p . -p "$sdk" -o "$out" >/dev/null
echo "built $out ($(( $(wc -c <"$out") / 1024 )) KiB) in $(( $(date +%s) - start )) s" >&2
