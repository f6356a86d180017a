"""{{name}}: a wasmeca plugin. ``role:{{name}},cmd:hello`` answers a greeting; over REST it is
``GET /{{name}}/hello?name=...``. Each greeting publishes the event ``evt:{{name}},cmd:greeted``;
the observer below hears it and keeps the greeting in the host's entity store, which outlives the
instance: ``role:{{name}},cmd:greetings`` (``GET /{{name}}/greetings``) lists them.
"""

from wasmeca import Msg, Plugin, entity, export, log, publish

greetings = entity("{{name}}/greeting")
"""Greetings, in the host's entity store (base ``{{name}}``, name ``greeting``)."""


def setup(options: Msg) -> Plugin:
    plugin = Plugin("{{name}}", "0.1.0", state={"count": 0})

    @plugin.add("role:{{name}},cmd:hello", example={"role": "{{name}}", "cmd": "hello", "name": "World"})
    def hello(msg, state):
        state["count"] += 1
        # From the message, or from the query string over REST.
        name = msg.str("name") or msg.query("name") or "World"
        log.info(f"greeting {name}")
        publish({"evt": "{{name}}", "cmd": "greeted", "name": name})
        return {"message": f"Hello {name}!", "count": state["count"]}

    @plugin.add("role:{{name}},cmd:greetings")
    def listed(msg, state):
        return greetings.list({"sort$": {"name": 1}})

    # An observer: its result is discarded; raising has the event delivered again.
    @plugin.observe("evt:{{name}},cmd:greeted")
    def greeted(event, state):
        greetings.save({"name": event.str("name")})

    return plugin.routes({"prefix": "/{{name}}", "pin": "role:{{name}},cmd:*", "map": {"hello": True, "greetings": True}})


Guest = export(setup)
