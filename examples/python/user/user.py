"""user@1.0.0 in Python: the seed's CRUD module (plugins/user in Rust), written with the wasmeca
Python SDK. ``module:user,if:list|load|edit|create|delete`` over an in-memory list that starts
with users 1, 2, 3 (甲, 乙, 丙), reachable over REST through its seneca-web route map (prefix
``/user``). The id comes from the route (``args.params.id``) or from the message (``id``); names
from the body (``args.body.name``) or the message (``name``).
"""

import re

from wasmeca import Error, Msg, Plugin, export


class Users:
    """The in-memory table: all users, in id order."""

    def __init__(self):
        self.list = [{"id": 1, "name": "甲"}, {"id": 2, "name": "乙"}, {"id": 3, "name": "丙"}]

    def position(self, msg: Msg) -> int:
        """The index of the user the message names, or ``invalid_input`` / ``not_found``."""
        param = msg.param("id")
        user_id = int(param) if param is not None and re.fullmatch(r"[+-]?\d+", param) else msg.int("id")
        if user_id is None:
            raise Error.invalid_input("an `id` is needed (in the path or the message)")
        for at, user in enumerate(self.list):
            if user["id"] == user_id:
                return at
        raise Error.not_found(f"no user with id {user_id}")

    @staticmethod
    def name(msg: Msg) -> str:
        """The name from the body or the message: a non-empty string, or ``invalid_input``."""
        body = msg.body()
        from_body = body.get("name") if isinstance(body, dict) else None
        name = from_body if isinstance(from_body, str) else msg.str("name")
        if name is None or not name.strip():
            raise Error.invalid_input("a non-empty `name` is needed (in the body or the message)")
        return name


def setup(options: Msg) -> Plugin:
    plugin = Plugin("user", "1.0.0", state=Users())

    @plugin.add("module:user,if:list", example={"module": "user", "if": "list"})
    def list_users(msg, users):
        return users.list

    @plugin.add("module:user,if:load", example={"module": "user", "if": "load", "id": 2})
    def load(msg, users):
        return users.list[users.position(msg)]

    @plugin.add("module:user,if:edit", example={"module": "user", "if": "edit", "id": 2, "name": "乙二"})
    def edit(msg, users):
        user = users.list[users.position(msg)]
        user["name"] = Users.name(msg)
        return user

    @plugin.add("module:user,if:create", example={"module": "user", "if": "create", "name": "丁"})
    def create(msg, users):
        user = {"id": max((u["id"] for u in users.list), default=0) + 1, "name": Users.name(msg)}
        users.list.append(user)
        return user

    @plugin.add("module:user,if:delete", example={"module": "user", "if": "delete", "id": 3})
    def delete(msg, users):
        return users.list.pop(users.position(msg))

    return plugin.routes({
        "prefix": "/user",
        "pin": "module:user,if:*",
        "map": {
            "list": {"GET": True, "name": ""},
            "load": {"GET": True, "name": "", "suffix": "/:id"},
            "edit": {"PUT": True, "name": "", "suffix": "/:id"},
            "create": {"POST": True, "name": ""},
            "delete": {"DELETE": True, "name": "", "suffix": "/:id"},
        },
    })


Guest = export(setup)
