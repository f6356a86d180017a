"""probe@0.1.0: exercises every part of the Python SDK against a real host (errors, logs,
nested acts, prior, state, typed helpers, options). Built by the [build] command of the
wasmeca.toml beside it; run with `wasmeca act --log info sdk/python/test/wasmeca.toml probe:log`.
"""

from wasmeca import Error, Plugin, act, export, log


def setup(options):
    if options.bool("fail"):
        raise ValueError("options.fail is set")
    plugin = Plugin("probe", "0.1.0", state={"calls": 0})

    @plugin.add("probe:throw")
    def throw(msg, state):
        return {}["boom"]  # an unexpected exception: the caller gets `act_execute`

    @plugin.add("probe:raise")
    def raise_(msg, state):
        raise Error("teapot", "short and stout", details={"spout": True}, status=418)

    @plugin.add("probe:log")
    def log_(msg, state):
        log.info("hello from python", {"tx": msg.tx()}, 42)
        log.warn("a warning from python")
        return {"logged": True}

    @plugin.add("probe:act")
    def act_(msg, state):
        try:
            return {"answer": act({"nobody": "serves-this"})}
        except Error as e:
            return {"caught": True, "code": e.code, "message": e.message, "status": e.status}

    plugin.add("probe:act-uncaught", lambda msg, state: act({"nobody": "serves-this"}))
    plugin.add("probe:relay", lambda msg, state: {"relayed": act(msg["relay"])})
    # Acts each message of `chain` in turn (state kept between them shows in the answers).
    plugin.add("probe:chain", lambda msg, state: [act(m) for m in msg["chain"]])

    @plugin.add("probe:state")
    def count(msg, state):
        state["calls"] += 1
        return {"calls": state["calls"]}

    @plugin.add("probe:typed")
    def typed(msg, state):
        return {
            "str": msg.str("s"),
            "number": msg.number("n"),
            "int": msg.int("n"),
            "bool": msg.bool("b"),
            "param": msg.param("id"),
            "query": msg.query("q"),
            "body": msg.body(),
            "tx": type(msg.tx()).__name__,
        }

    plugin.add("probe:require", lambda msg, state: {"n": msg.require_number("n")})
    plugin.add("probe:bad-result", lambda msg, state: {"set": {1, 2}})
    plugin.add("probe:not-objarr", lambda msg, state: "just text")
    plugin.add("probe:void", lambda msg, state: None)
    plugin.add("probe:options", lambda msg, state: options)
    plugin.add("probe:exit", lambda msg, state: exit(3))  # SystemExit must not kill the instance either

    # Overrides the user plugin's load (loaded before this one) and decorates its answer.
    plugin.add("module:user,if:load", lambda msg, state: {**msg.prior(), "probed": True}).example(
        {"module": "user", "if": "load", "id": 1}
    )
    return plugin


Guest = export(setup)
