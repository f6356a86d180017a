"""Unit tests of wasmeca.py under plain CPython (no component): stand-ins replace the bindings
componentize-py generates. Run: `python3 -m unittest discover -s sdk/python/test`."""

import json
import os
import sys
import unittest
from dataclasses import dataclass
from enum import Enum
from types import SimpleNamespace
from typing import Any, Optional

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import wasmeca  # noqa: E402
from wasmeca import Error, Msg, Plugin, act, cache, entity, export, log, publish  # noqa: E402


@dataclass(frozen=True)
class Err(Exception):
    """Like componentize_py_types.Err."""

    value: Any


@dataclass
class ErrorRecord:
    code: str
    message: str
    details: Optional[str]
    status: Optional[int]


@dataclass
class Action:
    pattern: str
    example: Optional[str]


@dataclass
class Manifest:
    name: str
    version: str
    actions: list
    routes: str
    observers: list


class Level(Enum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


class FakeHost:
    def __init__(self):
        self.logs = []
        self.answer = lambda text: "null"
        self.published = []
        self.publish = self.published.append

    def act(self, text):
        return self.answer(text)

    prior = act

    def log(self, level, text):
        self.logs.append((level.name.lower(), text))


class SdkTest(unittest.TestCase):
    def setUp(self):
        self.host = FakeHost()
        types = SimpleNamespace(Error=ErrorRecord, Action=Action, Manifest=Manifest, Level=Level)
        for name, value in {"Err": Err, "_host": self.host, "_types": types}.items():
            self.addCleanup(setattr, wasmeca, name, getattr(wasmeca, name))
            setattr(wasmeca, name, value)

    def err(self, fn, *args):
        with self.assertRaises(Err) as caught:
            fn(*args)
        return caught.exception.value

    def test_typed_accessors(self):
        m = Msg({"a": 1, "b": "2", "c": "x", "d": True, "e": 1.5, "f": "2.0", "g": "0x10",
                 "args": {"params": {"id": "7"}, "query": {"q": ["1", "2"]}, "body": {"name": "n"}}})
        self.assertEqual((m.int("a"), m.int("b"), m.int("e"), m.int("f"), m.int("d")), (1, 2, None, None, None))
        self.assertEqual((m.number("e"), m.number("f"), m.number("g")), (1.5, 2.0, None))
        self.assertEqual((m.str("c"), m.str("a"), m.bool("d")), ("x", None, True))
        self.assertEqual((m.param("id"), m.query("q"), m.body()), ("7", ["1", "2"], {"name": "n"}))
        self.assertEqual(m["c"], "x")
        with self.assertRaises(Error) as caught:
            m.require_number("c")
        e = caught.exception
        self.assertEqual((e.code, e.status, e.message, e.details), ("invalid_input", 400, '`c` must be a number, not "x"', {"field": "c"}))
        with self.assertRaisesRegex(Error, "`zz` is missing; it must be a string"):
            m.require_str("zz")
        self.assertIsNone(Msg({"args": "x"}).param("id"))

    def test_manifest_and_state(self):
        def setup(options):
            plugin = Plugin("counter", "1.0.0", state={"n": options.int("start") or 0})

            @plugin.add("cmd:inc", example={"cmd": "inc"})
            def inc(msg, state):
                state["n"] += 1
                return {"n": state["n"]}

            return plugin.routes({"prefix": "/c", "pin": "cmd:*", "map": {"inc": {"GET": True}}})

        guest = export(setup)()
        manifest = guest.init('{"start":5}')
        self.assertEqual(manifest, Manifest("counter", "1.0.0", [Action("cmd:inc", '{"cmd":"inc"}')],
                                            '[{"prefix":"/c","pin":"cmd:*","map":{"inc":{"GET":true}}}]', []))
        self.assertEqual(guest.handle(0, '{"cmd":"inc"}'), '{"n":6}')
        self.assertEqual(guest.handle(0, '{"cmd":"inc"}'), '{"n":7}')
        self.assertEqual(self.err(guest.handle, 3, "{}"), ErrorRecord("invalid_action", "this plugin has no action 3", None, None))
        self.assertEqual(self.err(guest.handle, 0, "[1]").code, "invalid_input")

    def test_errors_are_records_never_traps(self):
        plugin = Plugin("e", "1.0.0")

        def not_found(msg, state):
            raise Error.not_found("no such thing", {"id": 9})

        plugin.add("a:1", not_found).add("a:2", lambda msg, state: 1 / 0).add("a:3", lambda m, s: None)
        plugin.add("a:4", lambda msg, state: {"s": {1}})
        guest = export(plugin)()
        guest.init("{}")
        self.assertEqual(self.err(guest.handle, 0, "{}"), ErrorRecord("not_found", "no such thing", '{"id":9}', 404))
        self.assertEqual(self.err(guest.handle, 1, "{}"),
                         ErrorRecord("act_execute", "seneca: Action a:2 failed: division by zero.", '{"name":"ZeroDivisionError"}', None))
        self.assertEqual(self.host.logs[0][0], "error")
        self.assertIn("ZeroDivisionError", self.host.logs[0][1])
        self.assertEqual(guest.handle(2, "{}"), "null")
        self.assertEqual(self.err(guest.handle, 3, "{}").code, "invalid_result")

        def broken(options):
            raise RuntimeError("no config")

        self.assertEqual(self.err(export(broken)().init, "{}"),
                         ErrorRecord("init_failed", "plugin init failed: no config", '{"name":"RuntimeError"}', None))

    def test_act_and_log(self):
        self.host.answer = lambda text: '{"ok":1}' if json.loads(text) == {"cmd": "x"} else "null"
        self.assertEqual(act({"cmd": "x"}), {"ok": 1})

        def fail(text):
            raise Err(ErrorRecord("act_not_found", "nobody", '{"a":1}', None))

        self.host.answer = fail
        with self.assertRaises(Error) as caught:
            act(Msg({"cmd": "x"}))
        self.assertEqual((caught.exception.code, caught.exception.details), ("act_not_found", {"a": 1}))
        log.info("n =", 3, {"a": [1]})
        self.assertEqual(self.host.logs[-1], ("info", 'n = 3 {"a":[1]}'))

    def test_observers(self):
        plugin = Plugin("audit", "1.0.0", state={"created": 0})

        @plugin.observe("evt:user,cmd:created")
        def created(event, state):
            self.assertEqual(event.str("evt"), "user")
            state["created"] += 1
            return {"ignored": True}

        plugin.observe("evt:user,cmd:bad", lambda event, state: 1 / 0)
        plugin.add("role:audit,cmd:count", lambda msg, state: {"created": state["created"]})
        guest = export(plugin)()
        manifest = guest.init("{}")
        self.assertEqual(manifest.observers, [Action("evt:user,cmd:created", None), Action("evt:user,cmd:bad", None)])
        self.assertIsNone(guest.observe(0, '{"evt":"user","cmd":"created"}'))
        guest.observe(0, '{"evt":"user","cmd":"created"}')
        self.assertEqual(guest.handle(0, "{}"), '{"created":2}')
        self.assertEqual(self.err(guest.observe, 1, "{}"),
                         ErrorRecord("observe_failed", "observer evt:user,cmd:bad failed: division by zero",
                                     '{"name":"ZeroDivisionError"}', None))
        self.assertEqual(self.err(guest.observe, 5, "{}").code, "invalid_observer")
        self.assertEqual(self.err(guest.observe, 0, "[]").code, "invalid_input")

    def test_publish(self):
        publish({"evt": "user", "cmd": "created", "id": 1})
        self.assertEqual(self.host.published, ['{"evt":"user","cmd":"created","id":1}'])

        def refuse(text):
            raise Err(ErrorRecord("publish_failed", "broker down", None, 503))

        self.host.publish = refuse
        with self.assertRaises(Error) as caught:
            publish({"evt": "x"})
        self.assertEqual((caught.exception.code, caught.exception.status), ("publish_failed", 503))

    def test_entity(self):
        seen, answers = [], []

        def answer(text):
            seen.append(json.loads(text))
            return answers.pop(0) if answers else "null"

        self.host.answer = answer
        items = entity("shop/item")
        self.assertEqual(items.canon, "-/shop/item")
        answers.append('{"id":"a1","name":"apple","entity$":"-/shop/item"}')
        self.assertEqual(items.save({"name": "apple"})["id"], "a1")
        self.assertEqual(seen[-1], {"sys": "entity", "cmd": "save", "base": "shop", "name": "item", "q": {},
                                    "qent": {"entity$": "-/shop/item"},
                                    "ent": {"name": "apple", "entity$": "-/shop/item"}})
        self.assertIsNone(items.load("zz"))
        self.assertEqual(seen[-1]["q"], {"id": "zz"})
        answers.append('[{"id":"a1"}]')
        self.assertEqual(items.list({"color": "red"}), [{"id": "a1"}])
        self.assertEqual(items.list(), [])
        self.assertEqual(seen[-1]["q"], {})
        self.assertIsNone(items.remove(7))
        self.assertEqual(seen[-1]["q"], {"load$": True, "id": 7})
        with self.assertRaises(Error):
            items.save([1])
        self.assertEqual(entity("user").canon, "-/-/user")
        self.assertEqual(entity("z1/shop/item").parts, {"zone": "z1", "base": "shop", "name": "item"})

    def test_cache(self):
        seen, answers = [], []

        def answer(text):
            seen.append(json.loads(text))
            return answers.pop(0) if answers else "{}"

        self.host.answer = answer
        cache.set("visits", 0)
        self.assertEqual(seen[-1], {"role": "cache", "cmd": "set", "key": "visits", "val": 0})
        answers.append('{"value":1}')
        self.assertEqual(cache.incr("visits"), 1)
        self.assertEqual(seen[-1], {"role": "cache", "cmd": "incr", "key": "visits", "val": 1})
        answers.append('{"value":false}')  # the host's answer for a missing key
        self.assertIsNone(cache.decr("nope", 2))
        answers.append('{"value":null}')
        self.assertIsNone(cache.get("missing"))
        answers.append('{"value":{"a":1}}')
        self.assertEqual(cache.get("k"), {"a": 1})
        cache.add("k2", "v")
        cache.delete("k2")
        self.assertEqual(seen[-1], {"role": "cache", "cmd": "delete", "key": "k2"})


if __name__ == "__main__":
    unittest.main()
