#!/usr/bin/env bash
# Tests the C SDK: the native test of wasmeca.c under AddressSanitizer/UBSan (needs a host
# `cc`), then builds examples/c/salute-math and the probe plugin (sdk/c/test/probe.c) with
# sdk/c/build.sh and acts messages through a real wasmeca host.
#
#   sdk/c/test/run.sh [path/to/wasmeca]     (default: $WASMECA, else target/debug/wasmeca)
#
# Needs `sdk/toolchains.sh c` first. Outputs go to target/c-test/. Ends with
# one line "c-sdk: N passed, N failed[, N skipped]"; exits non-zero when anything failed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
host="${1:-${WASMECA:-$root/target/debug/wasmeca}}"
out="$root/target/c-test"
mkdir -p "$out"
passed=0 failed=0 skipped=0

# --- native ------------------------------------------------------------------------------
if command -v cc >/dev/null; then
  if cc -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined \
      -Wall -Wextra -Wno-attributes -Wno-maybe-uninitialized \
      -I "$root/sdk/c" -I "$root/sdk/c/gen" -o "$out/native_test" \
      "$root/sdk/c/test/native_test.c" "$root/sdk/c/test/probe.c" \
      "$root/sdk/c/wasmeca.c" "$root/sdk/c/gen/plugin.c" 2>"$out/native_cc.log"; then
    line="$("$out/native_test" | tee /dev/stderr | tail -1)"
    if [[ "$line" =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
      passed=$((passed + BASH_REMATCH[1])) failed=$((failed + BASH_REMATCH[2]))
    else
      echo "FAIL native test crashed (see above)"; failed=$((failed + 1))
    fi
  else
    cat "$out/native_cc.log"; echo "FAIL native test does not compile"; failed=$((failed + 1))
  fi
else
  echo "skip native test: no cc"; skipped=$((skipped + 1))
fi

# --- components --------------------------------------------------------------------------
build() { # name sources...
  local name="$1"; shift
  if "$root/sdk/c/build.sh" -o "$out/$name.wasm" "$@" >/dev/null; then
    passed=$((passed + 1))
  else
    echo "FAIL build $name"; failed=$((failed + 1))
  fi
}
build salute-math "$root/examples/c/salute-math/salute-math.c"
build probe "$root/sdk/c/test/probe.c"
build notes "$root/examples/c/notes/notes.c"

# expect EXIT_CODE EXPECTED_OUTPUT act-arguments...
expect() {
  local code="$1" want="$2"; shift 2
  local got rc
  got="$(cd "$out" && "$host" act "$@" 2>/dev/null)"; rc=$?
  if [[ "$rc" == "$code" && "$got" == "$want" ]]; then
    passed=$((passed + 1))
  else
    echo "FAIL act ${*: -1}"; echo "  want ($code): $want"; echo "  got  ($rc): $got"
    failed=$((failed + 1))
  fi
}

if [[ -x "$host" && -f "$out/salute-math.wasm" && -f "$out/probe.wasm" ]]; then
  sm=salute-math.wasm
  err400='"details":{"field":"left"},"message":"`left` must be a number, not \"x\"","msg":"`left` must be a number, not \"x\"","name":"Error","seneca":true,"status":400,"statusCode":400}'
  inspect="$("$host" inspect "$out/$sm" 2>&1)"
  if [[ "$inspect" == salute-math@1.0.0* && "$inspect" == *"[2] role:math,cmd:product"* ]]; then
    passed=$((passed + 1))
  else
    echo "FAIL inspect: $inspect"; failed=$((failed + 1))
  fi
  expect 0 '{"id":1,"message":"Hello World!"}' $sm 'cmd:salute,name:World'
  expect 0 '{"id":1,"message":"Hello World!"}' $sm 'cmd:salute'
  expect 0 '{"id":1,"message":"Hello Zoë 甲!"}' $sm '{"cmd":"salute","name":"Zoë 甲"}'
  expect 0 '{"answer":3}' $sm 'role:math,cmd:sum,left:1,right:2'
  expect 0 '{"answer":3}' $sm 'role:math,cmd:product,left:1.5,right:2'
  expect 0 '{"answer":0.30000000000000004}' $sm 'role:math,cmd:sum,left:"0.1",right:0.2'
  expect 1 "{\"code\":\"invalid_input\",$err400" $sm 'role:math,cmd:sum,left:x'
  expect 0 '{"ok":false,"error":{"code":"act_not_found","message":"No matching action pattern found for {\"cmd\":\"nope\"}, and no default result provided (using a default$ property).","status":0,"details":null}}' \
    $sm probe.wasm 'role:probe,cmd:relay,forward:{cmd:nope}'
  expect 0 '{"ok":true,"answer":{"id":1,"message":"Hello C!"}}' $sm probe.wasm 'role:probe,cmd:relay,forward:{cmd:salute,name:C}'
  expect 1 "{\"code\":\"invalid_input\",$err400" $sm probe.wasm 'role:probe,cmd:pass,forward:{role:math,cmd:product,left:x}'
  expect 0 '[{"id":1,"message":"Hello World!"},{"id":2,"message":"Hello World!"}]' $sm probe.wasm 'role:probe,cmd:twice,forward:{cmd:salute}'
  expect 0 '{"answer":3,"checked":true}' $sm probe.wasm 'role:math,cmd:sum,left:1,right:2'
  expect 0 '{"answer":null,"checked":true}' probe.wasm 'role:math,cmd:sum,left:1,right:2'
  expect 0 '{"constructed":true,"options":{}}' probe.wasm 'role:probe,cmd:state'
  expect 1 '{"code":"not_found","details":{"name":"ghost"},"message":"no user ghost","msg":"no user ghost","name":"Error","seneca":true,"status":404,"statusCode":404}' \
    probe.wasm 'role:probe,cmd:require,name:ghost'
  expect 1 '{"code":"invalid_json","details":{},"message":"invalid JSON at byte 1: `{oops}`","msg":"invalid JSON at byte 1: `{oops}`","name":"Error","seneca":true,"status":500,"statusCode":500}' \
    probe.wasm 'role:probe,cmd:bad'
  # Entities and the cache in memory (nothing left behind), and events.
  export WASMECA_DATA_URL=memory:// WASMECA_CACHE_URL=memory://
  expect 0 '{"saved":"pen","loaded":"pen","missing":null,"listed":1,"removed":"pen","count":3,"absent":null}' \
    probe.wasm 'role:probe,cmd:data,name:pen'
  expect 0 '{"published":true}' probe.wasm 'role:probe,cmd:publish,n:1'
  expect 0 '{"added":0,"heard":0}' notes.wasm 'role:notes,cmd:stats'
  logs="$(cd "$out" && WASMECA_LOG=wasmeca::plugin=trace NO_COLOR=1 "$host" act probe.wasm 'role:probe,cmd:log,who:me' 2>&1 >/dev/null)"
  if [[ "$logs" == *"info from me"* && "$logs" == *"error � invalid utf-8 replaced"* ]]; then
    passed=$((passed + 1))
  else
    echo "FAIL log lines: $logs"; failed=$((failed + 1))
  fi
else
  echo "skip host tests: no host binary at $host (or a build failed)"; skipped=$((skipped + 1))
fi

summary="c-sdk: $passed passed, $failed failed"
[[ $skipped -gt 0 ]] && summary+=", $skipped skipped"
echo "$summary"
[[ $failed -eq 0 ]]
