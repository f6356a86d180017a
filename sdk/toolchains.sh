#!/usr/bin/env bash
# Installs the guest toolchains that build wasmeca plugins in other languages, locally and
# idempotently (nothing system-wide; a second run with nothing to do takes well under a second).
#
#   sdk/toolchains.sh js        componentize-js (npm ci in sdk/js, from its package-lock)
#   sdk/toolchains.sh python    componentize-py 0.25.1 in target/tools/venv
#   sdk/toolchains.sh c         zig 0.17.1 in target/tools/venv
#   sdk/toolchains.sh js python (several at once)
#
# Each subcommand is a function named `toolchain_<name>` below: add a language by adding one.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/target/tools"

say() { printf 'toolchains: %s\n' "$*" >&2; }

# The venv in target/tools/venv that the Python and C toolchains share, created with the
# machine's CPython on first use. $1 names the toolchain in messages.
ensure_venv() {
    local python
    [[ -x "$TOOLS/venv/bin/python" ]] && return 0
    python="$(command -v python3.11 || command -v python3 || true)"
    [[ -n "$python" ]] || { say "$1: no python3 found (CPython 3.11 is expected)"; return 1; }
    say "$1: creating venv target/tools/venv with $("$python" --version 2>&1) ($python)"
    mkdir -p "$TOOLS"
    "$python" -m venv "$TOOLS/venv"
}

# --- JavaScript: @bytecodealliance/componentize-js (StarlingMonkey engine) -----------------------
# Installed with `npm ci` in sdk/js from the committed package-lock.json (with rolldown, which
# bundles a plugin's imports); sdk/js/build.mjs uses both. The lock's hash is kept in node_modules
# so an unchanged lock is not reinstalled. After changing sdk/js/package.json, refresh the lock
# with `npm run lock` there (npm install + prune-lock.mjs, which drops the optional native
# packages of other platforms that this registry does not serve, or `npm ci` refuses the lock).
toolchain_js() {
    local dir="$ROOT/sdk/js" stamp want have=""
    command -v node >/dev/null || { say "node is not installed (Node 20 or newer is needed)"; return 1; }
    command -v npm >/dev/null || { say "npm is not installed"; return 1; }
    want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    stamp="$dir/node_modules/.wasmeca-lock.sha256"
    [[ -f "$stamp" ]] && have="$(cat "$stamp")"
    if [[ "$have" == "$want" && -f "$dir/node_modules/@bytecodealliance/componentize-js/package.json" ]]; then
        say "js: componentize-js already installed in sdk/js/node_modules (package-lock unchanged)"
    else
        say "js: npm ci in sdk/js (componentize-js from package-lock.json) ..."
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        printf '%s\n' "$want" >"$stamp"
    fi
    say "js: componentize-js $(node -p "require('$dir/node_modules/@bytecodealliance/componentize-js/package.json').version"); build with: node $dir/build.mjs <entry.js> -o <out.wasm>"
}

# --- Python: componentize-py 0.25.1 in a venv ------------------------------------------------------
COMPONENTIZE_PY_VERSION="0.25.1"

toolchain_python() {
    local venv="$TOOLS/venv" have=""
    if [[ -x "$venv/bin/componentize-py" ]]; then
        have="$("$venv/bin/componentize-py" --version 2>/dev/null | awk '{print $2}')"
    fi
    if [[ "$have" == "$COMPONENTIZE_PY_VERSION" ]]; then
        say "python: componentize-py $have already in target/tools/venv"
    else
        ensure_venv python || return 1
        say "python: pip install componentize-py==$COMPONENTIZE_PY_VERSION into target/tools/venv ..."
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "componentize-py==$COMPONENTIZE_PY_VERSION"
    fi
    say "python: $("$venv/bin/componentize-py" --version); run it as $venv/bin/componentize-py"
}

# --- C: Zig (zig cc) from PyPI ------------------------------------------------------------------
# Zig 0.17.1 goes into target/tools/venv from sdk/c/requirements.txt (version and wheel hash
# pinned); its cache (its wasi-libc build) is warmed in target/tools/zig-cache. The component step
# is the wasmeca binary's own (`wasmeca componentize`, with the WASI adapter of its wasmtime built
# in), so nothing else is needed. sdk/c/build.sh uses both.
C_ZIG_VERSION="0.17.1"

toolchain_c() {
    local venv="$TOOLS/venv" zig=""
    if [[ -x "$venv/bin/python" ]]; then
        zig="$("$venv/bin/python" -m ziglang version 2>/dev/null || true)"
    fi
    if [[ "$zig" == "$C_ZIG_VERSION" ]]; then
        say "c: zig $zig already in target/tools/venv"
    else
        ensure_venv c || return 1
        say "c: pip install ziglang==$C_ZIG_VERSION (sdk/c/requirements.txt) ..."
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
            --require-hashes -r "$ROOT/sdk/c/requirements.txt"
    fi
    # Zig builds wasi-libc on first use (~30 s): compile the SDK's probe plugin now, once (the
    # compile only: the component step needs the wasmeca binary, which may not be built yet).
    local probe
    probe="$(mktemp -d)"
    (cd "$ROOT/sdk/c" && ZIG_GLOBAL_CACHE_DIR="$TOOLS/zig-cache" "$venv/bin/python" -m ziglang cc -target wasm32-wasi \
        -mexec-model=reactor -Os -s -I . -I gen -o "$probe/core.wasm" test/probe.c wasmeca.c gen/plugin.c gen/plugin_component_type.o)
    rm -rf "$probe"
    say "c: zig $("$venv/bin/python" -m ziglang version); build with: sdk/c/build.sh -o <out.wasm> <plugin.c>"
}

usage() {
    local names
    names="$(declare -F | awk '{print $3}' | sed -n 's/^toolchain_//p' | tr '\n' ' ')"
    echo "usage: $0 <toolchain>...   (toolchains: ${names% })" >&2
}

main() {
    if [[ $# -eq 0 || "$1" == "-h" || "$1" == "--help" ]]; then
        usage
        [[ $# -gt 0 ]]
        return
    fi
    local name
    for name in "$@"; do
        if ! declare -F "toolchain_$name" >/dev/null; then
            say "unknown toolchain '$name'"
            usage
            return 2
        fi
    done
    for name in "$@"; do
        "toolchain_$name"
    done
}

main "$@"
