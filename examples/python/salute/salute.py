"""salute@1.0.0 in Python: the same action as the Rust seed (plugins/salute). ``cmd:salute``
answers ``{id, message: "Hello <name>!"}``; ``id`` counts this instance's greetings.
"""

from wasmeca import Msg, Plugin, export


def setup(options: Msg) -> Plugin:
    plugin = Plugin("salute", "1.0.0", state={"count": 0})

    @plugin.add("cmd:salute", example={"cmd": "salute", "name": "World"})
    def salute(msg, state):
        state["count"] += 1
        return {"id": state["count"], "message": f"Hello {msg.str('name') or 'World'}!"}

    return plugin


Guest = export(setup)
