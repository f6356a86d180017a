"""Write wasmeca plugins (Seneca-style message-pattern services) in Python.

The same shape as the Rust SDK (sdk/src/lib.rs) and the JS one (sdk/js/wasmeca.js): build a
:class:`Plugin` with a name, a version and a state, add actions by pattern and observers of
events, read messages with typed helpers, act other patterns, publish events, keep data in the
host's entity store and cache, log, declare seneca-web routes, and export it as the ``guest``
interface of the ``plugin`` world (wit/plugin.wit, wasmeca:plugin@0.2.0)::

    from wasmeca import Plugin, Error, act, log, export

    def setup(options):
        plugin = Plugin("salute", "1.0.0", state={"count": 0})

        @plugin.add("cmd:salute", example={"cmd": "salute", "name": "World"})
        def salute(msg, state):
            state["count"] += 1
            log.info("salute number", state["count"])
            return {"message": f"Hello {msg.str('name') or 'World'}!"}

        @plugin.observe("evt:user,cmd:created")
        def created(event, state):
            state["users"] = state.get("users", 0) + 1

        return plugin

    Guest = export(setup)   # componentize-py looks for the class `Guest` in the app module

Build with componentize-py 0.25 (``sdk/toolchains.sh python`` installs it), in the
app's folder: ``sh <repo>/sdk/python/build.sh app dist/app.wasm``, which runs::

    componentize-py -d <repo>/wit -w plugin componentize app -p . -p <repo>/sdk/python -o dist/app.wasm

Handlers get ``(msg, state)``: ``msg`` is a :class:`Msg` (a ``dict`` with helpers), ``state``
is the plugin's state, kept for the life of the instance (between calls, like a Node Seneca
plugin's closure variables). A handler answers a dict, a list or None. A raised :class:`Error`
reaches the caller as it is (code, message, details, status); any other exception becomes
Seneca's ``act_execute`` error and is logged with its traceback. A handler never traps the
instance.

Observers get ``(event, state)`` for every event their pattern matches; what they return is
discarded, and a raised exception means "not handled": the host delivers the event again and
dead-letters it after its attempts.

Data that must outlive the instance goes in the host's store: ``entity("shop/item")`` gives
save/load/list/remove over ``sys:entity``, ``cache`` get/set/add/incr/decr/delete over
``role:cache``. A missing entity or cache key is None.
"""

from __future__ import annotations

import json
import re
import traceback
from typing import Any, Callable, Optional, Union

try:  # the bindings componentize-py generates while it builds the component
    from componentize_py_types import Err
    from wit_world import exports as _exports
    from wit_world.imports import host as _host
    from wit_world.imports import types as _types
except ImportError:  # plain CPython (unit tests, editors): no host to call
    Err = None
    _exports = _host = _types = None

__all__ = [
    "Error",
    "WasmecaError",
    "Msg",
    "Plugin",
    "Entity",
    "act",
    "prior",
    "publish",
    "entity",
    "cache",
    "log",
    "export",
]

JSON = Any
"""Any JSON value: dict, list, str, int, float, bool or None."""


class Error(Exception):
    """An error as callers see it: a code, a message, optional JSON details and an HTTP status.

    ``act`` and ``prior`` raise these too, so a handler that does not catch one passes the
    failed nested act up unchanged.
    """

    def __init__(self, code: str, message: str, details: JSON = None, status: Optional[int] = None):
        super().__init__(message)
        self.code = code
        """Machine-readable code, e.g. ``not_found``."""
        self.message = message
        """A sentence for people."""
        self.details = details
        """Optional JSON details (any JSON value)."""
        self.status = status
        """Optional HTTP status (400-599) for REST and HTTP callers."""

    @classmethod
    def invalid_input(cls, message: str, details: JSON = None) -> "Error":
        """``invalid_input`` with status 400: the message is missing something or has a bad value."""
        return cls("invalid_input", message, details, 400)

    @classmethod
    def not_found(cls, message: str, details: JSON = None) -> "Error":
        """``not_found`` with status 404."""
        return cls("not_found", message, details, 404)

    def with_details(self, details: JSON) -> "Error":
        """Sets the JSON details; returns this error."""
        self.details = details
        return self

    def with_status(self, status: int) -> "Error":
        """Sets the HTTP status; returns this error."""
        self.status = status
        return self

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"Error({self.code!r}, {self.message!r}, details={self.details!r}, status={self.status!r})"

    def to_record(self):
        """The error as the WIT ``error`` record (details as JSON text)."""
        details = None if self.details is None else _dumps(self.details, default=str)
        return _types.Error(str(self.code), str(self.message), details, _valid_status(self.status))

    @classmethod
    def from_record(cls, record) -> "Error":
        """An error from the WIT ``error`` record (an ``act`` or ``prior`` that failed)."""
        details = record.details
        if details is not None:
            try:
                details = json.loads(details)
            except ValueError:
                pass  # not JSON: keep the text
        return cls(record.code, record.message, details, record.status)


WasmecaError = Error
"""The same class under the JS SDK's name."""


def _valid_status(status: Any) -> Optional[int]:
    """A status the WIT ``u16`` accepts, or None."""
    try:
        n = int(status)
    except (TypeError, ValueError):
        return None
    return n if 100 <= n <= 599 and n == status else None


def _dumps(value: JSON, **kwargs) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), **kwargs)


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def _to_number(v: Any) -> Optional[float]:
    """A number from a number or a numeric string (REST params and query values are strings)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str) and _DECIMAL.fullmatch(v.strip()):
        return float(v.strip())
    return None


def _to_int(v: Any) -> Optional[int]:
    """An integer from an integral number or an integer string (``"2.0"`` is not one, ``2.0`` is)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and _INTEGER.fullmatch(v.strip()):
        return int(v.strip())
    return None


def _missing(key: str, what: str, got: Any) -> Error:
    if got is None:
        message = f"`{key}` is missing; it must be {what}"
    else:
        message = f"`{key}` must be {what}, not {_dumps(got, default=str)}"
    return Error.invalid_input(message, {"field": key})


def _args(msg: dict, part: str) -> dict:
    """``msg.args.<part>`` as a dict (empty when absent)."""
    args = msg.get("args")
    value = args.get(part) if isinstance(args, dict) else None
    return value if isinstance(value, dict) else {}


class Msg(dict):
    """A message: the JSON object itself (``msg["name"]``, ``msg.get("name")``) plus typed
    helpers. Helpers answer None when the key is missing or has the wrong type."""

    def str(self, key: str) -> Optional[str]:
        """A string value."""
        v = self.get(key)
        return v if isinstance(v, str) else None

    def number(self, key: str) -> Optional[float]:
        """A number, also read from a numeric string."""
        return _to_number(self.get(key))

    def int(self, key: str) -> Optional[int]:
        """An integer, also read from an integer string (``1.5`` and ``"1.0"`` are not ones)."""
        return _to_int(self.get(key))

    def bool(self, key: str) -> Optional[bool]:
        """A boolean (``true``/``false``, or the strings ``"true"``/``"false"``)."""
        v = self.get(key)
        if isinstance(v, bool):
            return v
        return {"true": True, "false": False}.get(v) if isinstance(v, str) else None

    def require_str(self, key: str) -> str:
        """A string that must be there: else raises ``invalid_input`` naming the key."""
        s = self.str(key)
        if s is None:
            raise _missing(key, "a string", self.get(key))
        return s

    def require_number(self, key: str) -> float:
        """A number that must be there: else raises ``invalid_input`` naming the key."""
        n = self.number(key)
        if n is None:
            raise _missing(key, "a number", self.get(key))
        return n

    def tx(self) -> Optional[str]:
        """The transaction id (``tx$``) this message belongs to."""
        return self.str("tx$")

    def param(self, name: str) -> Optional[str]:
        """A path parameter from a REST route (``args.params.<name>``, seneca-web's shape): a string."""
        v = _args(self, "params").get(name)
        return v if isinstance(v, str) else None

    def query(self, name: str) -> Union[None, str, list]:
        """A query parameter from a REST route (``args.query.<name>``): a string, or a list of
        strings for repeated keys."""
        return _args(self, "query").get(name)

    def body(self) -> JSON:
        """The request body from a REST route (``args.body``)."""
        args = self.get("args")
        return args.get("body") if isinstance(args, dict) else None

    def prior(self) -> JSON:
        """Calls the action this one overrode (Seneca's ``this.prior(msg)``) with this message."""
        return prior(self)


def _message_text(msg: Union[dict, str]) -> str:
    return msg if isinstance(msg, str) else _dumps(msg)


def _call_host(fn: Callable[[str], str], msg: Union[dict, str]) -> JSON:
    if _host is None:
        raise RuntimeError("wasmeca: no host (this code runs only inside a component)")
    try:
        answer = fn(_message_text(msg))
    except Err as e:
        raise Error.from_record(e.value) from None
    return json.loads(answer)


def act(msg: Union[dict, str]) -> JSON:
    """Acts a message: the host routes it to whichever plugin (or remote service) serves the best
    matching pattern, and returns the parsed answer. The message inherits the current ``tx$``.
    Raises :class:`Error` (for example ``act_not_found``) when the act fails.

    ``msg`` is a dict (or a Msg), or JSON text.
    """
    return _call_host(_host and _host.act, msg)


def prior(msg: Union[dict, str]) -> JSON:
    """Calls the action the current one overrode (Seneca's ``prior``); with none, the answer is
    the message's ``default$`` or None."""
    return _call_host(_host and _host.prior, msg)


def publish(event: Union[dict, str]) -> None:
    """Publishes an event (a dict, a Msg or JSON text): every observer whose pattern matches it
    hears it, in this host and, when the host has a broker, in every service observing it.
    Returns once the event is accepted; no observer anywhere is not an error. The event inherits
    the current ``tx$``. Raises :class:`Error` when the host refuses it::

        publish({"evt": "user", "cmd": "created", "id": user["id"]})
    """
    if _host is None:
        raise RuntimeError("wasmeca: no host (this code runs only inside a component)")
    try:
        _host.publish(_message_text(event))
    except Err as e:
        raise Error.from_record(e.value) from None


def _as_query(q: Any) -> dict:
    """An id (str or int) as the query ``{"id": q}``; a dict query as it is."""
    return dict(q) if isinstance(q, dict) else {"id": q}


class Entity:
    """An entity type of the host's store (``sys:entity``, Seneca's entity API), named by its
    canon: ``name``, ``base/name`` or ``zone/base/name``. Get one with :func:`entity`."""

    def __init__(self, canon: str):
        pieces = canon.split("/")
        if len(pieces) >= 3:
            zone, base, name = pieces[:3]
        elif len(pieces) == 2:
            zone, (base, name) = None, pieces
        else:
            zone, base, name = None, None, pieces[0]

        def part(p: Optional[str]) -> Optional[str]:
            return p if p and p != "-" else None

        self.parts: dict = {}
        """``zone``, ``base`` and ``name``, as the store's messages carry them (absent parts omitted)."""
        if part(zone):
            self.parts["zone"] = zone
        if part(base):
            self.parts["base"] = base
        self.parts["name"] = name
        self.canon = f"{part(zone) or '-'}/{part(base) or '-'}/{name}"
        """The canon as Seneca writes it (``-/shop/item``): the ``entity$`` of what is saved."""

    def message(self, cmd: str, q: dict) -> dict:
        """The ``sys:entity`` message for ``cmd`` with this type's parts and the query ``q``."""
        return {"sys": "entity", "cmd": cmd, **self.parts, "q": q, "qent": {"entity$": self.canon}}

    def save(self, data: dict) -> dict:
        """Saves ``data`` (a dict): a create when it has no ``id`` (an ``id$`` picks the id), else a
        merge into the stored record (created when unknown). Returns the stored entity."""
        if not isinstance(data, dict):
            raise Error.invalid_input(f"an entity is a JSON object, not {_dumps(data, default=str)}")
        msg = self.message("save", {})
        msg["ent"] = {**data, "entity$": self.canon}
        return act(msg)

    def load(self, q: Union[str, int, dict]) -> Optional[dict]:
        """The entity with this id (a str or an int), or the first matching a query dict; None
        when there is none."""
        return act(self.message("load", _as_query(q)))

    def list(self, q: Optional[dict] = None) -> list:
        """The entities matching a query dict (None or ``{}`` for all; ``sort$``, ``skip$``,
        ``limit$``, ``fields$``), as a list."""
        found = act(self.message("list", {} if q is None else q))
        if found is None:
            return []
        if not isinstance(found, list):
            raise Error("entity_invalid", f"list answered {_dumps(found, default=str)}, not an array")
        return found

    def remove(self, q: Union[str, int, dict]) -> Optional[dict]:
        """Removes the entity with this id (or the first matching a query dict; every match with
        ``all$: True``) and returns the removed one, or None when there was none."""
        return act(self.message("remove", {"load$": True, **_as_query(q)}))

    def __repr__(self) -> str:
        return f"Entity({self.canon!r})"


def entity(canon: str) -> Entity:
    """The entity type ``canon`` (``item``, ``shop/item``, ``zone/shop/item``) of the host's store::

        items = entity("shop/item")
        apple = items.save({"name": "apple", "price": 1.5})
        items.load(apple["id"])                  # the entity, or None
        items.list({"sort$": {"price": -1}, "limit$": 10})
        items.remove(apple["id"])
    """
    return Entity(canon)


class _Cache:
    """The host's cache (``role:cache``): JSON values under string keys, with the expiry the
    host is configured with::

        cache.set("visits", 0)
        cache.incr("visits")                     # 1
        cache.get("nope")                        # None
    """

    @staticmethod
    def _act(cmd: str, key: str, *val: JSON) -> JSON:
        msg = {"role": "cache", "cmd": cmd, "key": str(key)}
        if val:
            msg["val"] = val[0]
        return act(msg)

    def set(self, key: str, val: JSON) -> None:
        """Stores ``val`` under ``key``."""
        self._act("set", key, val)

    def get(self, key: str) -> JSON:
        """The value under ``key``, or None when there is none."""
        answer = self._act("get", key)
        return answer.get("value") if isinstance(answer, dict) else None

    def add(self, key: str, val: JSON) -> None:
        """Stores ``val`` under ``key`` unless the key is taken (then raises ``key_exists``)."""
        self._act("add", key, val)

    def incr(self, key: str, by: float = 1) -> Optional[float]:
        """Adds ``by`` (default 1) to the number under ``key`` and returns the new value; None
        when the key is missing (nothing is created)."""
        return self._number(self._act("incr", key, by))

    def decr(self, key: str, by: float = 1) -> Optional[float]:
        """Subtracts ``by`` (default 1) from the number under ``key``, as :meth:`incr` adds."""
        return self._number(self._act("decr", key, by))

    def delete(self, key: str) -> None:
        """Forgets ``key`` (missing keys too)."""
        self._act("delete", key)

    @staticmethod
    def _number(answer: JSON) -> Optional[float]:
        value = answer.get("value") if isinstance(answer, dict) else None
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


cache = _Cache()
"""The host's cache: ``cache.get``, ``set``, ``add``, ``incr``, ``decr``, ``delete``."""


class _Log:
    """Writes to the host's log, tagged with this plugin and the current transaction:
    ``log.info("loaded", n, "users")``. Arguments are joined with spaces like ``print``; dicts
    and lists are written as JSON."""

    @staticmethod
    def _text(args: tuple) -> str:
        def one(a: Any) -> str:
            if isinstance(a, (dict, list)):
                try:
                    return _dumps(a, default=str)
                except ValueError:
                    return repr(a)
            return a if isinstance(a, str) else repr(a) if isinstance(a, BaseException) else f"{a}"

        return " ".join(one(a) for a in args)

    def _write(self, level: str, args: tuple) -> None:
        text = self._text(args)
        if _host is None:
            print(f"[{level}] {text}")
        else:
            _host.log(getattr(_types.Level, level.upper()), text)

    def trace(self, *args: Any) -> None:
        """Logs at trace level."""
        self._write("trace", args)

    def debug(self, *args: Any) -> None:
        """Logs at debug level."""
        self._write("debug", args)

    def info(self, *args: Any) -> None:
        """Logs at info level."""
        self._write("info", args)

    def warn(self, *args: Any) -> None:
        """Logs at warn level."""
        self._write("warn", args)

    def error(self, *args: Any) -> None:
        """Logs at error level."""
        self._write("error", args)


log = _Log()
"""The host's log: ``log.trace``, ``log.debug``, ``log.info``, ``log.warn``, ``log.error``."""

Handler = Callable[[Msg, Any], JSON]
"""A handler: gets the message and the plugin's state, answers a dict, a list or None."""

Observer = Callable[[Msg, Any], Any]
"""An observer: gets the event and the plugin's state; what it returns is discarded."""


class _Action:
    """One declared action."""

    __slots__ = ("pattern", "example", "handler")

    def __init__(self, pattern: str, example: Optional[dict], handler: Handler):
        self.pattern = pattern
        """The pattern, as written."""
        self.example = example
        """Optional example message."""
        self.handler = handler
        """What answers it."""


class _Observer:
    """One declared observer."""

    __slots__ = ("pattern", "handler")

    def __init__(self, pattern: str, handler: Observer):
        self.pattern = pattern
        """The event pattern, as written."""
        self.handler = handler
        """What handles the events."""


class Plugin:
    """A plugin: its name, version, state, actions, observers and routes."""

    def __init__(self, name: str, version: str, state: Any = None):
        self.name = name
        """Manifest name, e.g. ``user``."""
        self.version = version
        """Manifest version (semver), e.g. ``1.0.0``."""
        self.state = {} if state is None else state
        """State given to every handler, kept for the life of the instance."""
        self.actions: list[_Action] = []
        """Actions in the order added (later ones override earlier ones on the same pattern)."""
        self.route_sets: list = []
        """seneca-web route sets."""
        self.observers: list[_Observer] = []
        """Observers in the order added."""

    def add(self, pattern: str, handler: Optional[Handler] = None, *, example: Optional[dict] = None):
        """Adds an action for a pattern (``cmd:salute``, ``role:user,cmd:*``); the handler gets
        ``(msg, state)`` and answers a dict, a list or None.

        As a call, ``plugin.add(pattern, handler)`` returns the plugin (to chain); as a
        decorator, ``@plugin.add(pattern, example={...})`` returns the function unchanged.
        """
        if handler is None:

            def register(fn: Handler) -> Handler:
                self.add(pattern, fn, example=example)
                return fn

            return register
        if not callable(handler):
            raise TypeError(f"add({pattern!r}): the handler must be callable")
        self.actions.append(_Action(pattern, example, handler))
        return self

    def observe(self, pattern: str, handler: Optional[Observer] = None):
        """Adds an observer for an event pattern (``evt:user,cmd:created``): the handler gets
        ``(event, state)`` for every event the pattern matches (a :class:`Msg`, with ``event$``,
        its id, and ``tx$``). What it returns is discarded; a raised exception means "not
        handled": the host delivers the event again and dead-letters it after its attempts.

        As a call, ``plugin.observe(pattern, handler)`` returns the plugin (to chain); as a
        decorator, ``@plugin.observe(pattern)`` returns the function unchanged.
        """
        if handler is None:

            def register(fn: Observer) -> Observer:
                self.observe(pattern, fn)
                return fn

            return register
        if not callable(handler):
            raise TypeError(f"observe({pattern!r}): the handler must be callable")
        self.observers.append(_Observer(pattern, handler))
        return self

    def example(self, msg: dict) -> "Plugin":
        """Attaches an example message to the action added last (used by ``wasmeca check``)."""
        if self.actions:
            self.actions[-1].example = msg
        return self

    def routes(self, routes: Union[dict, list]) -> "Plugin":
        """Declares seneca-web route sets (one dict or a list):
        ``{"prefix": "/user", "pin": "module:user,if:*", "map": {"list": {"GET": True, "name": ""}}}``."""
        if isinstance(routes, list):
            self.route_sets.extend(routes)
        else:
            self.route_sets.append(routes)
        return self

    def manifest(self):
        """The WIT manifest record."""
        actions = [
            _types.Action(a.pattern, None if a.example is None else _dumps(a.example)) for a in self.actions
        ]
        observers = [_types.Action(o.pattern, None) for o in self.observers]
        return _types.Manifest(self.name, self.version, actions, _dumps(self.route_sets), observers)

    def handle(self, index: int, msg: Msg) -> str:
        """Runs action ``index`` on a message; answers JSON text or raises."""
        if not 0 <= index < len(self.actions):
            raise Error("invalid_action", f"this plugin has no action {index}")
        answer = self.actions[index].handler(msg, self.state)
        try:
            return _dumps(answer)
        except (TypeError, ValueError) as e:
            raise Error("invalid_result", f"the result cannot be written as JSON: {e}") from None


    def observe_event(self, index: int, event: Msg) -> None:
        """Runs observer ``index`` on an event; its result is discarded. Raises what it raises."""
        if not 0 <= index < len(self.observers):
            raise Error("invalid_observer", f"this plugin has no observer {index}")
        self.observers[index].handler(event, self.state)


def _as_error(e: BaseException, pattern: Optional[str], kind: str = "action") -> Error:
    """Any exception as an Error: kept as it is, or (logged with its traceback and) wrapped as
    Seneca's ``act_execute`` for an action, ``observe_failed`` for an observer, ``init_failed``
    for the setup function."""
    if isinstance(e, Error):
        return e
    where = "init" if pattern is None else f"{kind} {pattern}"
    try:
        log.error(f"{where} failed:\n{''.join(traceback.format_exception(e))}")
    except BaseException:
        pass  # logging must never hide the error
    text = str(e) or type(e).__name__
    status = _valid_status(getattr(e, "status", None) or getattr(e, "status_code", None))
    details = {"name": type(e).__name__}
    if pattern is None:
        return Error("init_failed", f"plugin init failed: {text}", details, status)
    if kind == "observer":
        return Error("observe_failed", f"observer {pattern} failed: {text}", details, status)
    return Error("act_execute", f"seneca: Action {pattern} failed: {text}.", details, status)


def _dispatch(plugin: Optional[Plugin], call: str, index: int, text: str, kind: str):
    """Runs the guest's ``handle`` (``kind`` "action") or ``observe`` (``kind`` "observer") for entry
    ``index`` of the plugin's actions or observers on the JSON object ``text``; any failure is
    raised as ``Err(error record)`` naming the entry's pattern."""
    pattern = f"#{index}"
    try:
        if plugin is None:
            raise Error("not_initialised", f"{call} called before init")
        entries = plugin.observers if kind == "observer" else plugin.actions
        if 0 <= index < len(entries):
            pattern = entries[index].pattern
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            what = "event" if kind == "observer" else "message"
            raise Error.invalid_input(f"the {what} is not a JSON object")
        if kind == "observer":
            plugin.observe_event(index, Msg(data))
            return None
        return plugin.handle(index, Msg(data))
    except BaseException as e:
        raise Err(_as_error(e, pattern, kind).to_record()) from None


def export(setup: Union[Callable[[Msg], Plugin], Plugin]) -> type:
    """Exports a plugin as the ``guest`` interface: ``Guest = export(setup)`` in the app module.

    ``setup(options)`` builds the :class:`Plugin` from the options in the host's configuration
    (a :class:`Msg`); it runs in ``init``, once per instance. A Plugin may also be given directly.
    """
    current: list[Optional[Plugin]] = [None]
    base = _exports.Guest if _exports is not None else object

    class Guest(base):  # type: ignore[misc, valid-type]
        """The ``guest`` export componentize-py calls; errors are raised as ``Err(error record)``."""

        def init(self, options: str):
            try:
                try:
                    data = json.loads(options)
                except ValueError:
                    data = None
                opts = Msg(data if isinstance(data, dict) else {})
                plugin = setup if isinstance(setup, Plugin) else setup(opts)
                if not isinstance(plugin, Plugin):
                    raise TypeError("the setup function must return a Plugin")
                current[0] = plugin
                return plugin.manifest()
            except BaseException as e:
                raise Err(_as_error(e, None).to_record()) from None

        def handle(self, action: int, msg: str) -> str:
            return _dispatch(current[0], "handle", action, msg, "action")

        def observe(self, observer: int, event: str) -> None:
            _dispatch(current[0], "observe", observer, event, "observer")

    return Guest
