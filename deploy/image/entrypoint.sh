#!/bin/sh
# The container's entrypoint: tells Consul the container's own address (which only the
# container knows), unless WASMECA_ADVERTISE says otherwise, then runs wasmeca.
set -eu
if [ -z "${WASMECA_ADVERTISE:-}" ]; then
  WASMECA_ADVERTISE=$(hostname -i 2>/dev/null | cut -d ' ' -f 1)
  export WASMECA_ADVERTISE
fi
exec wasmeca "$@"
