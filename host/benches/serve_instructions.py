#!/usr/bin/env python3
"""Instructions per request of `wasmeca serve`, every thread counted (issue 21 item 5).

The in-process `profile_act` bench counts the act path on the thread that runs it; a traced
request also costs the batch exporter's thread (converting and encoding each span), which that
bench leaves out. This script runs `serve` under `valgrind --tool=callgrind` on the `user` and
`math` seeds (entity store in memory, as `http_load` runs it), sends 300 requests on one
keep-alive connection, zeroes the counters, sends N more, waits 7 s (so the batch exporter's
scheduled export of the last spans is in the count), dumps, and prints the instructions of
all its threads together. Run it twice, with N = 500 and N = 3,000: (count at 3,000 - count
at 500) / 2,500 is one request's, idle work (timers, the epoch thread) cancelling out.

    host/benches/serve_instructions.py REQUEST TRACES N

REQUEST: `user` (REST `GET /user/1`) or `act` (Seneca HTTP `/act` `role:math,cmd:sum`).
TRACES: `1` exports every trace by OTLP/HTTP to the `http_load` bench's sink (which decodes
each export as a collector would; build it with `cargo bench -p wasmeca --bench http_load
--no-run`), `0` leaves telemetry off. With `1`, `RATIO=0.1` samples that share of the traces
(`traceidratio`) instead of every one. `WASMECA_BIN` names the binary (default
target/release/wasmeca), `SEEDS` the seeds' folder (default
target/plugins/wasm32-wasip2/release). With `SPLIT=1` the exporter thread's share is printed
too (everything under `get_spans_and_export`). Figures go in BENCHMARKS.md.
"""

import glob
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(port):
    deadline = time.time() + 300
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.connect()
            return conn
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def main():
    request, traces, n = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
    binary = os.environ.get("WASMECA_BIN", "target/release/wasmeca")
    seeds = os.environ.get("SEEDS", "target/plugins/wasm32-wasip2/release")
    rest, act, sink = free_port(), free_port(), free_port()
    work = tempfile.mkdtemp(prefix="serve-instructions-")
    # Whatever fails, nothing started here is left running, and the folder goes.
    started = []
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(
            WASMECA_CACHE_DIR=os.path.join(work, "cache"),
            WASMECA_DATA_DIR=os.path.join(work, "data"),
            WASMECA_DATA_URL="memory://",
            WASMECA_NO_QUICK_START="true",
            RUST_LOG="warn",
        )
        # The plugins compiled outside valgrind first: under it, Cranelift would take minutes.
        subprocess.run(
            [binary, "compile", f"{seeds}/user.wasm", f"{seeds}/math.wasm"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if traces:
            load = [
                f
                for f in glob.glob("target/release/deps/http_load-*")
                if not f.endswith(".d")
            ]
            started.append(subprocess.Popen([load[0], "--sink", str(sink)]))
            env.update(
                OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink}",
                OTEL_TRACES_SAMPLER="always_on",
            )
            if os.environ.get("RATIO"):
                env.update(
                    OTEL_TRACES_SAMPLER="traceidratio",
                    OTEL_TRACES_SAMPLER_ARG=os.environ["RATIO"],
                )
        out = os.path.join(work, "callgrind.out")
        server = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                binary,
                "serve",
                "--rest",
                f"127.0.0.1:{rest}",
                "--http",
                f"127.0.0.1:{act}",
                f"{seeds}/user.wasm",
                f"{seeds}/math.wasm",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(server)
        if request == "act":
            conn = connect(act)
            body = '{"role":"math","cmd":"sum","left":1,"right":2}'
            headers = {"content-type": "application/json"}

            def send():
                conn.request("POST", "/act", body=body, headers=headers)
        else:
            conn = connect(rest)

            def send():
                conn.request("GET", "/user/1")

        def drive(count):
            for _ in range(count):
                send()
                response = conn.getresponse()
                response.read()
                assert response.status == 200, response.status

        drive(300)
        time.sleep(7)
        subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True,
                       stdout=subprocess.DEVNULL)
        drive(n)
        time.sleep(7)
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True,
                       stdout=subprocess.DEVNULL)
        time.sleep(2)
        dump = f"{out}.1"
        with open(dump) as f:
            total = next(int(l.split()[1]) for l in f if l.startswith("summary:"))
        print(f"{request} traces={int(traces)} N={n}: {total} instructions")
        if os.environ.get("SPLIT") == "1":
            annotated = subprocess.run(
                ["callgrind_annotate", "--inclusive=yes", dump],
                capture_output=True, text=True, check=True,
            ).stdout
            for line in annotated.splitlines():
                if "BatchSpanProcessor::get_spans_and_export [" in line:
                    print("  the batch exporter's thread:", line.split()[0])
                    break
    finally:
        for process in started:
            process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
