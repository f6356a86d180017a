#!/usr/bin/env bash
# Builds the wasmeca image's runtime stage on a machine with no container engine and no
# registry, runs it, and checks it: a bookworm base made with debootstrap (cached in
# target/image/base), the runtime stage of ./Dockerfile built by buildah on it with the
# binary and seed plugins of the normal release build (no second compile), then `wasmeca
# serve` run inside it with `buildah run --isolation chroot` on loopback. Checks that the demo
# answers, that the process is not root, that data lands in /data, and that SIGTERM drains
# and exits 0, and that it holds the public CAs (for https collectors and agents). Installs
# debootstrap and buildah (Debian's) when missing.
#
#   deploy/image-test.sh          # prints each step's time and the image's size
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/image
mkdir -p "$work"
step() { printf '%s image-test: %s\n' "$(date +%T)" "$*"; }

if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  step "installing debootstrap and buildah"
  # One apt at a time (the test suite installs its validators beside this, under the same
  # lock), and apt waits for dpkg's own lock rather than failing at once.
  mkdir -p target
  apt() { flock target/apt.lock env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }
  apt install -y -q debootstrap buildah >/dev/null \
    || { apt update -q >/dev/null; apt install -y -q debootstrap buildah >/dev/null; }
fi
# crun cannot set rlimits in this sandbox: no default ulimits.
export CONTAINERS_CONF=$work/containers.conf
printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"
store=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)

# 1. The base: Debian bookworm, minimal, from Debian's own packages.
if ! buildah "${store[@]}" inspect --type image localhost/wasmeca-base >/dev/null 2>&1; then
  if [ ! -x "$work/base/bin/sh" ]; then
    step "debootstrap bookworm (once)"
    rm -rf "$work/base"
    debootstrap --variant=minbase bookworm "$work/base" http://deb.debian.org/debian >/dev/null
  fi
  step "making it an image"
  ctr=$(buildah "${store[@]}" from scratch)
  mnt=$(buildah "${store[@]}" mount "$ctr")
  cp -a "$work/base/." "$mnt/"
  buildah "${store[@]}" umount "$ctr" >/dev/null
  buildah "${store[@]}" commit -q "$ctr" localhost/wasmeca-base >/dev/null
  buildah "${store[@]}" rm "$ctr" >/dev/null
fi

# 2. The binary and the seeds, from the normal release build (or, as the test suite runs it,
#    the ones it built already: WASMECA_BIN and WASMECA_PLUGINS_DIR).
bin=${WASMECA_BIN:-}
plugins=${WASMECA_PLUGINS_DIR:-}
if [ -z "$bin" ]; then
  step "release build of the host"
  cargo build --release -q -p wasmeca --bin wasmeca
  bin=target/release/wasmeca
fi
if [ -z "$plugins" ]; then
  step "release build of the seed plugins"
  cargo build --release -q --target wasm32-wasip2 --manifest-path plugins/Cargo.toml --target-dir target/plugins
  plugins=target/plugins/wasm32-wasip2/release
fi
ctx=$work/context
rm -rf "$ctx" && mkdir -p "$ctx/out/plugins" "$ctx/deploy/image"
cp "$bin" "$ctx/out/wasmeca" && strip "$ctx/out/wasmeca"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/out/"
for p in salute math account config user audit; do
  cp "$plugins/$p.wasm" "$ctx/out/plugins/"
done
cp deploy/image/wasmeca.toml deploy/image/entrypoint.sh "$ctx/deploy/image/"
# The Dockerfile's runtime stage, as written, taking from this context what its build stage makes.
{ echo 'ARG BASE=debian:bookworm-slim'; sed -n '/^FROM \${BASE}/,$p' Dockerfile | sed 's|COPY --from=build /out/|COPY out/|'; } >"$ctx/Dockerfile"

# 3. The image.
step "building the runtime stage"
buildah "${store[@]}" bud -q --format docker --isolation chroot \
  --build-arg BASE=localhost/wasmeca-base -t localhost/wasmeca "$ctx" >/dev/null
buildah "${store[@]}" rmi --prune >/dev/null 2>&1 || true
added=$(du -sk "$ctx/out" | cut -f1)
step "images: $(buildah "${store[@]}" images --format '{{.Name}} {{.Size}}' | tr '\n' ';') wasmeca adds $((added / 1024)) MB (binary and seeds)"

# 4. Run it: serve on loopback, as the image's user, and check it.
ctr=$(buildah "${store[@]}" from localhost/wasmeca)
serve=
# Whatever happens, nothing is left running and the working container goes.
trap '[ -z "$serve" ] || { pkill -f "wasmeca serve /etc/wasmeca/wasmeca.toml" 2>/dev/null; kill "$serve" 2>/dev/null; }
      buildah "${store[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
user=$(buildah "${store[@]}" run --isolation chroot "$ctr" -- id -u)
[ "$user" != 0 ] || { echo "image-test: the image runs as root" >&2; exit 1; }
step "runs as uid $user"
cached() { buildah "${store[@]}" run --isolation chroot "$ctr" -- sh -c 'ls /var/cache/wasmeca | grep -c cwasm'; }
[ "$(cached)" = 6 ] || { echo "image-test: the seeds are not precompiled in the image: $(cached)" >&2; exit 1; }
step "the seeds are precompiled in the image"
cas=$(buildah "${store[@]}" run --isolation chroot "$ctr" -- grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt || true)
[ "${cas:-0}" -gt 50 ] || { echo "image-test: the image holds no CA bundle: ${cas:-none}" >&2; exit 1; }
step "the image trusts the public CAs ($cas)"
port=$((20000 + RANDOM % 20000))
buildah "${store[@]}" run --isolation chroot --env WASMECA_REST=127.0.0.1:$port --env WASMECA_HTTP=off \
  "$ctr" -- wasmeca-entrypoint serve /etc/wasmeca/wasmeca.toml >"$work/serve.log" 2>&1 &
serve=$!
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
  kill -0 $serve 2>/dev/null || { cat "$work/serve.log" >&2; echo "image-test: serve exited" >&2; exit 1; }
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null || { cat "$work/serve.log" >&2; exit 1; }
answer=$(curl -fsS -X PUT -H 'Content-Type: application/json' -d '{"name":"Bob"}' "http://127.0.0.1:$port/user/2")
echo "$answer" | grep -q '"Bob"' || { echo "image-test: PUT /user/2 answered $answer" >&2; exit 1; }
step "the demo answers: $answer"
buildah "${store[@]}" run --isolation chroot "$ctr" -- sh -c 'ls /data' | grep -q sqlite \
  || { echo "image-test: no store in /data" >&2; exit 1; }
step "data lands in /data"
[ "$(cached)" = 6 ] || { echo "image-test: serve compiled again: $(cached) artifacts" >&2; exit 1; }
step "serve loaded the image's precompiled seeds"
pid=$(pgrep -f "wasmeca serve /etc/wasmeca/wasmeca.toml" | head -n 1)
kill -TERM "$pid"
code=0; wait $serve || code=$?
serve=
[ "$code" = 0 ] || { cat "$work/serve.log" >&2; echo "image-test: exit $code after SIGTERM" >&2; exit 1; }
grep -q '"drain' "$work/serve.log" || grep -qi 'drain' "$work/serve.log" \
  || { echo "image-test: no drain in the log" >&2; exit 1; }
step "SIGTERM drained and exited 0"
step "passed"
