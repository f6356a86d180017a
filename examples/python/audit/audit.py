"""audit@1.0.0 in Python: observes ``evt:user,cmd:created`` (published by examples/js/accounts
when it saves a user) and keeps a count you can act for, an entry per event in the host's entity
store (``audit/entry``) and a durable count in its cache. Created with ``wasmeca new python
audit``, built with ``wasmeca build``.

    role:audit,cmd:count      {seen: events this instance handled, users: the cache's count,
                               entries: how many entries the store holds}
    role:audit,cmd:entries    the entries, newest first
"""

from wasmeca import Msg, Plugin, cache, entity, export, log

entries = entity("audit/entry")
"""One entry per user creation heard, in the host's store."""


def setup(options: Msg) -> Plugin:
    plugin = Plugin("audit", "1.0.0", state={"seen": 0})

    @plugin.observe("evt:user,cmd:created")
    def user_created(event, state):
        # What an observer returns is discarded; raising would have the event delivered again.
        state["seen"] += 1
        entries.save({"event": event.get("event$"), "user": event.get("id"), "name": event.get("name"),
                      "order": state["seen"]})
        # incr answers None for a missing key (and creates nothing): start the count then.
        if cache.incr("audit:users") is None:
            cache.set("audit:users", 1)
        log.info(f"user {event.get('id')} created ({event.get('name')})")

    @plugin.add("role:audit,cmd:count", example={"role": "audit", "cmd": "count"})
    def count(msg, state):
        return {"seen": state["seen"], "users": cache.get("audit:users") or 0, "entries": len(entries.list())}

    @plugin.add("role:audit,cmd:entries", example={"role": "audit", "cmd": "entries"})
    def list_entries(msg, state):
        return entries.list({"sort$": {"order": -1}})

    return plugin.routes({"prefix": "/audit", "pin": "role:audit,cmd:*", "map": {"count": True, "entries": True}})


Guest = export(setup)
