"""Old names of renamed classes and functions, kept working with a ``DeprecationWarning``.

A module that renamed something ends with one line; ``getattr`` (and so ``import``, ``pickle``
and the safe JSON loader) still finds the old name, and warns once per use::

    from symnas._deprecation import renamed_names
    __getattr__ = renamed_names(__name__, globals(), {"Dense": "Linear"})

    # elsewhere: symnas.program.operators.Dense is symnas.program.operators.Linear, with a warning
"""
import warnings
from typing import Any, Callable, Dict, Mapping


def renamed_names(module_name: str, namespace: Dict[str, Any], renamed: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that answers each old name in ``renamed`` (old -> new) with the
    new name's value from ``namespace`` (the module's ``globals()``), warning that it was renamed."""
    renamed = dict(renamed)

    def __getattr__(name: str) -> Any:
        if name in renamed:
            warnings.warn(f"{module_name}.{name} is renamed {module_name}.{renamed[name]}; "
                          f"the old name will go away.", DeprecationWarning, stacklevel=2)
            return namespace[renamed[name]]
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__
