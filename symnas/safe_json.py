"""The one loader for everything symnas reads from disk: nothing in a file ever runs.

``pg.load`` / ``pg.from_json_str`` trust their input: an ``_OpaqueObject`` entry is unpickled, a
``function`` entry carries marshalled byte code, ``type`` / ``function`` / ``method`` entries and
unknown ``_type`` names import the module they name (and a ``type`` with ``args`` is subscripted:
``ctypes.cdll[path]`` loads a native library). ``from_json`` / ``load`` here parse with ``json``
and build only:

- plain JSON values (numbers, strings, lists, dicts, PyGlove's ``__tuple__`` lists);
- symbolic classes (``pg.Object``, ``pg.Dict``, ``pg.List`` and their subclasses) already
  registered in this process: symnas's own classes (its subpackages load on demand; nothing
  outside symnas is ever imported), PyGlove's containers, search primitives, DNA specs and
  algorithms, and the classes the caller's own code imported;
- DNA, rebuilt from its plain numbers (metadata is dropped).

Anything else (opaque/pickled values, ``type``, ``function``, ``method``, an unregistered or
ambiguous type name, a class that is not symbolic) raises ``UnsafeJSONError`` naming it and where.

Example::

    import pyglove as pg, symnas as sn
    text = pg.to_json_str(pg.Dict(x=1, y=[1, 2]))
    assert sn.from_json(text) == pg.Dict(x=1, y=[1, 2])
    net = sn.load("benchmarks/networks/resnet18_original.json")   # a saved symbolic network
"""
from __future__ import annotations

import importlib
import json
import math
import os
from typing import Any, Union

import pyglove as pg

__all__ = ["UnsafeJSONError", "from_json", "load", "save", "dna_from_json", "from_json_str"]

_TYPE_KEY = pg.JSONConvertible.TYPE_NAME_KEY
_TUPLE = pg.JSONConvertible.TUPLE_MARKER
_CODE_ENTRIES = ("type", "function", "method")
_DNA_TYPE = pg.DNA.__serialization_key__

# symnas's own subpackages that hold symbolic classes; a file naming one of their classes loads
# the subpackage (it is part of symnas). No other module is ever imported by a load.
_SYMNAS_SUBPACKAGES = ("nn", "train", "data", "program", "proxies", "spaces", "algorithms", "hw", "kas",
                       "pte")

# PyGlove's own classes that a study, a network or an algorithm is made of. PyGlove also registers
# HTML views, mutable functions, object factories, class wrappers and its functor base; none of
# them belongs in a stored search, so they are refused with the other unknowns.
_PYGLOVE_MODULES = ("pyglove.core.symbolic.dict", "pyglove.core.symbolic.list", "pyglove.core.symbolic.ref",
                    "pyglove.core.geno.", "pyglove.core.hyper.", "pyglove.generators.", "pyglove.ext.evolution.",
                    "pyglove.ext.early_stopping.", "pyglove.ext.scalars.", "pyglove.core.tuning.")


class UnsafeJSONError(ValueError):
    """The JSON asks for something that could run code, or names a class not loaded in this process."""


def _allowed_class(type_name: str, where: str) -> type:
    if "<locals>" in type_name:
        raise UnsafeJSONError(f"{where}: refusing type {type_name!r}: a class defined inside a function "
                              f"has no unique name.")
    cls = pg.JSONConvertible.class_from_typename(type_name)
    if cls is None:
        cls = _symnas_class(type_name)
    if cls is None:
        raise UnsafeJSONError(
            f"{where}: unknown type {type_name!r}: no class of that name is loaded in this process. "
            f"Import the module that defines it before loading (a file never imports modules).")
    module = getattr(cls, "__module__", "") or ""
    if not isinstance(cls, type) or not issubclass(cls, pg.Symbolic):
        raise UnsafeJSONError(f"{where}: refusing type {type_name!r}: only symbolic classes (pg.Object, "
                              f"pg.Dict, pg.List) are loaded from files.")
    if module.startswith("pyglove.") and not module.startswith(_PYGLOVE_MODULES):
        raise UnsafeJSONError(f"{where}: refusing PyGlove's {type_name!r}: not a part of a search space, a "
                              f"network or an algorithm.")
    return cls


def _symnas_class(type_name: str):
    """A symnas class named by ``type_name``, loading its (symnas) subpackage if needed."""
    parts = type_name.split(".")
    if len(parts) < 3 or parts[0] != "symnas" or parts[1] not in _SYMNAS_SUBPACKAGES:
        return None
    try:
        importlib.import_module(f"symnas.{parts[1]}")
    except ImportError:
        return None
    return pg.JSONConvertible.class_from_typename(type_name)


def _check(node: Any, where: str, depth: int = 0) -> Any:
    """Validates ``node`` in place; DNA entries are replaced by their plain-number form."""
    if depth > 500:
        raise UnsafeJSONError(f"{where}: nested more than 500 levels deep.")
    if isinstance(node, list):
        for i, child in enumerate(node):
            node[i] = _check(child, f"{where}[{i}]", depth + 1)
        return node
    if not isinstance(node, dict):
        return node
    type_name = node.get(_TYPE_KEY)
    if type_name is not None:
        if not isinstance(type_name, str):
            raise UnsafeJSONError(f"{where}: '_type' must be a string, got {type_name!r}.")
        if type_name in _CODE_ENTRIES:
            raise UnsafeJSONError(f"{where}: refusing a {type_name!r} entry ({node.get('name')!r}): a file may "
                                  f"hold values, never code or references to code.")
        if type_name.endswith("_OpaqueObject"):
            raise UnsafeJSONError(f"{where}: refusing a pickled (opaque) value.")
        cls = _allowed_class(type_name, where)
        if issubclass(cls, pg.DNA):
            return {_TYPE_KEY: _DNA_TYPE, "format": "compact",
                    "value": _to_json_value(_plain_dna_value(_dna_value(node, where), where))}
    for key, child in node.items():
        if key != _TYPE_KEY:
            node[key] = _check(child, f"{where}.{key}", depth + 1)
    return node


def _dna_value(node: dict, where: str) -> Any:
    if node.get("format") == "compact":
        return node.get("value")
    if "children" in node or "value" in node:   # the symbolic form: value + children
        children = node.get("children") or []
        if not isinstance(children, list):
            raise UnsafeJSONError(f"{where}.children: a DNA's children must be a list.")
        value = node.get("value")
        if not children:
            return value
        kids = [_dna_value(c if isinstance(c, dict) else {"format": "compact", "value": c}, f"{where}.children")
                for c in children]
        return kids if value is None else (value, kids)
    raise UnsafeJSONError(f"{where}: a DNA needs a 'value'.")


def _plain_dna_value(value: Any, where: str, depth: int = 0) -> Any:
    """A DNA's value as plain numbers: int, finite float, str, None, lists and tuples of them."""
    if depth > 200:
        raise UnsafeJSONError(f"{where}: DNA nested more than 200 levels deep.")
    if value is None or isinstance(value, (int, str)) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsafeJSONError(f"{where}: a DNA holds {value}.")
        return value
    if isinstance(value, tuple):
        return tuple(_plain_dna_value(v, where, depth + 1) for v in value)
    if isinstance(value, list):
        if value and value[0] == _TUPLE:
            return tuple(_plain_dna_value(v, where, depth + 1) for v in value[1:])
        return [_plain_dna_value(v, where, depth + 1) for v in value]
    raise UnsafeJSONError(f"{where}: a DNA holds only numbers, strings and lists of them; got "
                          f"{type(value).__name__}.")


def _to_json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_TUPLE, *(_to_json_value(v) for v in value)]
    if isinstance(value, list):
        return [_to_json_value(v) for v in value]
    return value


def _parse(text: Union[str, bytes], source: str) -> Any:
    if not isinstance(text, (str, bytes, bytearray)):
        raise TypeError(f"from_json takes JSON text (str or bytes), got {type(text).__name__}.")
    try:
        return json.loads(text)
    except RecursionError as error:
        raise UnsafeJSONError(f"{source}: JSON nested too deeply.") from error
    except ValueError as error:   # JSONDecodeError, too many digits, bad UTF-8
        raise ValueError(f"{source}: not valid JSON ({error}).") from error


def from_json(text: Union[str, bytes], *, source: str = "JSON") -> Any:
    """The value of PyGlove JSON ``text``, built without running anything from it.

    Raises ``UnsafeJSONError`` (a ``ValueError``) naming the entry that is refused, ``ValueError``
    for text that is not JSON. ``source`` names the text in messages (``load`` passes the path).
    """
    value = _parse(text, source)
    try:
        value = _check(value, "$")
    except UnsafeJSONError as error:
        raise UnsafeJSONError(f"{source}: {error}") from None
    except RecursionError as error:
        raise UnsafeJSONError(f"{source}: JSON nested too deeply.") from error
    with pg.enable_type_check(True):
        return pg.from_json(value, auto_import=False)


def load(path: Union[str, os.PathLike]) -> Any:
    """The value saved in the JSON file at ``path`` (by ``pg.save``, ``sn.save`` or ``json.dump``).

    Example::

        net = sn.load("benchmarks/networks/resnet34_cold33.json")
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as error:
        raise FileNotFoundError(f"Cannot read {path!r}: {error.strerror or error}.") from error
    return from_json(text, source=path)


def save(value: Any, path: Union[str, os.PathLike]) -> None:
    """Writes ``value`` (symbolic or plain) as JSON to ``path``; ``load`` reads it back."""
    text = pg.to_json_str(value, save_ref_value=True) if isinstance(value, pg.Symbolic) else \
        json.dumps(pg.to_json(value))
    with open(os.fspath(path), "w", encoding="utf-8") as f:
        f.write(text)


def dna_from_json(text: Union[str, bytes, dict], spec: pg.DNASpec = None) -> pg.DNA:
    """A ``pg.DNA`` rebuilt from its JSON (PyGlove's compact form or a bare value) as plain numbers."""
    value = _parse(text, "DNA") if isinstance(text, (str, bytes, bytearray)) else text
    if isinstance(value, dict):
        if value.get(_TYPE_KEY, _DNA_TYPE) != _DNA_TYPE:
            raise UnsafeJSONError(f"DNA: expected a DNA, got type {value.get(_TYPE_KEY)!r}.")
        value = _dna_value(value, "DNA")
    plain = _plain_dna_value(value, "DNA")
    with pg.enable_type_check(False):
        dna = pg.DNA(plain)
    if spec is not None:
        dna.use_spec(spec)
    return dna


from_json_str = from_json   # the name symnas used before sn.from_json
