"""A live web view of symnas studies: optuna-dashboard reading the study file a search writes.

``OptunaStorageView`` is a read-only Optuna storage over a symnas storage (no copy, no second
file); ``DashboardServer`` serves optuna-dashboard on it. From the shell:
``symnas dashboard runs.db``.

Example::

    import symnas.dashboard as dash
    with dash.DashboardServer("runs.db", port=0) as server:
        print("open", server.url)
"""
from symnas.dashboard.optuna_view import OptunaStorageView, ReadOnlyStudyError
from symnas.dashboard.server import DashboardServer

__all__ = ["OptunaStorageView", "ReadOnlyStudyError", "DashboardServer"]
