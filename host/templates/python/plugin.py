"""{{name}}: a wasmeca plugin. ``role:{{name}},cmd:hello`` answers a greeting; over REST it is
``GET /{{name}}/hello?name=...``.
"""

from wasmeca import Msg, Plugin, export, log


def setup(options: Msg) -> Plugin:
    plugin = Plugin("{{name}}", "0.1.0", state={"count": 0})

    @plugin.add("role:{{name}},cmd:hello", example={"role": "{{name}}", "cmd": "hello", "name": "World"})
    def hello(msg, state):
        state["count"] += 1
        # From the message, or from the query string over REST.
        name = msg.str("name") or msg.query("name") or "World"
        log.info(f"greeting {name}")
        return {"message": f"Hello {name}!", "count": state["count"]}

    return plugin.routes({"prefix": "/{{name}}", "pin": "role:{{name}},cmd:*", "map": {"hello": True}})


Guest = export(setup)
