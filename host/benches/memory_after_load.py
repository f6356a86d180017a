#!/usr/bin/env python3
"""Memory a host holds after load (issue 22 item 4), a script rather than a cargo bench.

Starts `wasmeca serve` on the six seed plugins (the default SQLite store in a fresh file,
`[data] expose = true`, `--rest off`), waits until the compile cache holds Cranelift's code of
all six, then puts one keep-alive connection's load on `/act` and prints `Rss` and `Anonymous`
from `/proc/PID/smaps_rollup`, in MB, 3 s after the start settled and 2 s after the load.

    host/benches/memory_after_load.py START LOAD [AMOUNT]

START: `cold` (an empty compile cache, quick start), `cold-noquick` (`--no-quick-start`) or
`warm` (a cache `wasmeca compile` filled first). LOAD: `act` (AMOUNT seconds of `cmd:salute`
with a unique `id$` each, default 60) or `saves` (AMOUNT `sys:entity` saves, default 20,000).
`WASMECA_BIN` names the binary (default target/release/wasmeca), `SEEDS` the folder of the six
seeds (default target/plugins/wasm32-wasip2/release, as the suite builds them). `POKE=N` then
sends N more acts and prints the memory again, and 20 s later once more; `SMAPS=FILE` copies
`/proc/PID/smaps` there after the load. Figures go in BENCHMARKS.md.
"""

import glob
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SEEDS = ["salute", "math", "account", "config", "user", "audit"]


def held(pid):
    """Rss, Anonymous and LazyFree of the process, in MB."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, value = line.split(":", 1)
            if key in ("Rss", "Anonymous", "LazyFree"):
                out[key] = int(value.split()[0]) / 1000
    return out


def act(conn, body):
    conn.request("POST", "/act", json.dumps(body), {"Content-Type": "application/json"})
    reply = conn.getresponse()
    text = reply.read()
    assert reply.status == 200, (reply.status, text)


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("cold", "cold-noquick", "warm") \
            or sys.argv[2] not in ("act", "saves"):
        sys.exit(__doc__)
    start, load = sys.argv[1], sys.argv[2]
    amount = int(sys.argv[3]) if len(sys.argv) > 3 else (60 if load == "act" else 20000)
    binary = os.environ.get("WASMECA_BIN", "target/release/wasmeca")
    seeds = os.environ.get("SEEDS", "target/plugins/wasm32-wasip2/release")
    root = tempfile.mkdtemp(prefix="wasmeca-memory-")
    try:
        plugins = os.path.join(root, "plugins")
        os.makedirs(plugins)
        for seed in SEEDS:
            shutil.copy(os.path.join(seeds, f"{seed}.wasm"), plugins)
        cache = os.path.join(root, "cache")
        config = os.path.join(root, "wasmeca.toml")
        with open(config, "w") as f:
            f.write(f'[data]\nurl = "sqlite://{root}/data.db"\nexpose = true\n\n'
                    f'[[plugin]]\npath = "{plugins}"\n')
        env = dict(os.environ, WASMECA_CACHE_DIR=cache, WASMECA_LOG="error")
        if start == "warm":
            subprocess.run([binary, "compile", plugins], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        flags = ["--no-quick-start"] if start == "cold-noquick" else []
        host = subprocess.Popen(
            [binary, "serve", config, "--rest", "off", "--http", f"127.0.0.1:{port}", *flags],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            began = time.time()
            while True:
                try:
                    act(http.client.HTTPConnection("127.0.0.1", port), {"cmd": "salute"})
                    break
                except (OSError, AssertionError, http.client.HTTPException):
                    assert time.time() - began < 60, "no answer in 60 s"
                    time.sleep(0.01)
            while len(glob.glob(os.path.join(cache, "*.cwasm"))) < len(SEEDS):
                assert time.time() - began < 120, "no optimised code in 120 s"
                time.sleep(0.05)
            time.sleep(3)
            before = held(host.pid)
            conn = http.client.HTTPConnection("127.0.0.1", port)
            n = 0
            if load == "act":
                began = time.time()
                while time.time() - began < amount:
                    act(conn, {"cmd": "salute", "id$": f"m{n:011d}/t{n:011d}"})
                    n += 1
            else:
                for n in range(1, amount + 1):
                    act(conn, {"sys": "entity", "cmd": "save", "base": "bench", "name": "item",
                               "q": {}, "ent": {"entity$": "-/bench/item", "n": n, "pad": "x" * 40}})
            time.sleep(2)
            print(f"{start} {load}: {n} requests; settled {before}; after the load "
                  f"{held(host.pid)}")
            if os.environ.get("SMAPS"):
                shutil.copy(f"/proc/{host.pid}/smaps", os.environ["SMAPS"])
            if os.environ.get("POKE"):
                for i in range(int(os.environ["POKE"])):
                    act(conn, {"cmd": "salute", "id$": f"p{i:011d}/q{i:011d}"})
                time.sleep(2)
                print(f"after {os.environ['POKE']} more acts {held(host.pid)}")
                time.sleep(20)
                print(f"20 s later {held(host.pid)}")
        finally:
            host.kill()
            host.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
