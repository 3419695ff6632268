"""Loading PyGlove JSON from a study file without running code from it.

``pg.from_json_str`` is not safe for files from elsewhere: an ``_OpaqueObject`` entry is
unpickled, a ``function`` entry carries marshalled byte code, and an unknown ``_type`` imports
the module it names. ``from_json_str`` here parses with ``json``, rejects those three, and only
builds classes that are already registered (imported) in this process.

Example::

    value = from_json_str(pg.to_json_str(pg.Dict(x=1)))
"""
from __future__ import annotations

import json
import sys
from typing import Any

import pyglove as pg

_TYPE_KEY = "_type"
_OPAQUE_SUFFIX = "_OpaqueObject"


class UnsafeJSONError(ValueError):
    """The JSON asks for something that would run code (pickle, byte code, an import)."""


def _check(node: Any, where: str) -> None:
    if isinstance(node, list):
        for i, child in enumerate(node):
            _check(child, f"{where}[{i}]")
    elif isinstance(node, dict):
        type_name = node.get(_TYPE_KEY)
        if type_name is not None:
            if not isinstance(type_name, str):
                raise UnsafeJSONError(f"{where}: '_type' must be a string, got {type_name!r}.")
            if type_name.endswith(_OPAQUE_SUFFIX):
                raise UnsafeJSONError(f"{where}: refusing a pickled (opaque) object.")
            if type_name in ("function", "method"):
                if "code" in node:
                    raise UnsafeJSONError(f"{where}: refusing a function with byte code.")
                _check_module_loaded(str(node.get("name", "")), where)
            elif type_name == "type":
                _check_module_loaded(str(node.get("name", "")), where)
            elif pg.JSONConvertible.class_from_typename(type_name) is None:
                raise UnsafeJSONError(
                    f"{where}: type {type_name!r} is not registered in this process; import the module "
                    f"that defines it first (a study file never imports modules by itself).")
        for key, child in node.items():
            _check(child, f"{where}.{key}")


def _check_module_loaded(symbol: str, where: str) -> None:
    module = symbol.rpartition(".")[0]
    while module and module not in sys.modules:
        module = module.rpartition(".")[0]
    if not module:
        raise UnsafeJSONError(f"{where}: {symbol!r} lives in a module that is not imported; refusing to "
                              f"import it from a study file.")


def from_json_str(text: str) -> Any:
    """The symbolic value of PyGlove JSON ``text``; raises UnsafeJSONError where it could run code."""
    value = json.loads(text)
    _check(value, "$")
    return pg.from_json(value, auto_import=False)
