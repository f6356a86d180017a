#!/usr/bin/env bash
# Builds a wasmeca plugin component from C sources.
#
#   sdk/c/build.sh -o dist/plugin.wasm plugin.c [more.c ...] [-- extra compiler flags]
#
# Compiles the sources with this folder's wasmeca.c and the committed bindings in gen/
# into a core module (wasm32-wasi, reactor model), then turns it into a component with
# `wasmeca componentize`, adapting WASI preview 1 imports (stdio, clocks, random ...) to
# WASI 0.2 when the module has any; a plugin that uses none gets no WASI imports.
#
# Tools (install them with `sdk/toolchains.sh c`; each can be overridden):
#   WASMECA_CC       the C compiler with its target flags
#                    (default: Zig from <repo>/target/tools/venv: `python -m ziglang cc -target wasm32-wasi`;
#                    with Debian's clang: "clang --target=wasm32-wasi --sysroot=/usr")
#   WASMECA          the wasmeca binary that makes the component (default: `wasmeca` on PATH,
#                    else <repo>/target/{release,debug}/wasmeca)
#   CFLAGS           replaces the default optimisation flags (-Os -s)
#
# The compiler runs in this folder (sdk/c), whatever the caller's folder: Zig keys its cache of
# wasi-libc on the working directory, so one fixed folder keeps every build after the first
# under a second. Sources and -o are taken relative to the caller's folder; paths inside extra
# compiler flags (-I ...) must be absolute.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${WASMECA_TOOLS:-$(cd "$here/../.." && pwd)/target/tools}"

abspath() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }

out=""
sources=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$(abspath "$2")"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) sources+=("$(abspath "$1")"); shift ;;
  esac
done
if [ -z "$out" ] || [ ${#sources[@]} -eq 0 ]; then
  echo "usage: $0 -o OUT.wasm SOURCE.c... [-- CFLAGS...]" >&2
  exit 2
fi

missing() {
  echo "build.sh: $1 not found; run sdk/toolchains.sh c (or set $2)" >&2
  exit 1
}

if [ -n "${WASMECA_CC:-}" ]; then
  read -r -a cc <<<"$WASMECA_CC"
else
  [ -x "$tools/venv/bin/python" ] || missing "$tools/venv/bin/python (Zig)" WASMECA_CC
  cc=("$tools/venv/bin/python" -m ziglang cc -target wasm32-wasi)
  # Keep Zig's cache (its build of wasi-libc) with the other local tools.
  export ZIG_GLOBAL_CACHE_DIR="${ZIG_GLOBAL_CACHE_DIR:-$tools/zig-cache}"
fi
# The component step is wasmeca's own (`wasmeca componentize`: wit-component with the WASI
# reactor adapter of the host's wasmtime built in). WASMECA names the binary (`wasmeca build`
# sets it); else `wasmeca` on PATH, else this source tree's target/{release,debug}/wasmeca.
wasmeca="${WASMECA:-}"
if [ -z "$wasmeca" ]; then
  if command -v wasmeca >/dev/null 2>&1; then
    wasmeca=wasmeca
  else
    for candidate in "$here/../../target/release/wasmeca" "$here/../../target/debug/wasmeca"; do
      if [ -x "$candidate" ]; then wasmeca="$candidate"; break; fi
    done
  fi
fi
[ -n "$wasmeca" ] || missing "the wasmeca binary (for its componentize step)" WASMECA

read -r -a cflags <<<"${CFLAGS:--Os -s}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$here" && "${cc[@]}" -mexec-model=reactor "${cflags[@]}" -Wall -Wextra \
  -I "$here" -I "$here/gen" \
  -o "$work/core.wasm" \
  "${sources[@]}" "$here/wasmeca.c" "$here/gen/plugin.c" "$here/gen/plugin_component_type.o" \
  ${extra[@]+"${extra[@]}"})

mkdir -p "$(dirname "$out")"
"$wasmeca" componentize "$work/core.wasm" -o "$out"
echo "built $out ($(wc -c <"$out") bytes)"
