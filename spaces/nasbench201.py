"""NAS-Bench-201 / NATS-Bench topology search space: 6 edges x 5 ops = 15625 cells.

``NASBench201()`` is the search space (one ``pg.oneof`` per edge); a materialised value such as
``NASBench201(ops=['nor_conv_3x3', ...])`` is one architecture. It knows its official arch string
and index, looks itself up in the tabular results (``$SYMNAS_DATA/nasbench201/nb201_tss_all.csv.gz``
by default, or the ``table`` path) and builds its torch network.

Example::

    import pyglove as pg, symnas as sn
    space = sn.spaces.NASBench201()
    for arch, feedback in pg.sample(space, sn.algorithms.RegularizedEvolution(seed=0), num_examples=20):
        feedback(arch.query('valid_12'))          # 12-epoch CIFAR-10 validation accuracy
    resnet = sn.spaces.NASBench201.from_arch_str(
        '|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|')
    resnet.index, resnet.query('test')           # (11472, 93.91)
"""
from __future__ import annotations

import csv
import gzip
import os
import pathlib
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import pyglove as pg

__all__ = ["NASBench201", "NASBench201Table", "NB201_OPS", "load_nasbench201_table"]

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
_OP_CODE = {op: str(i) for i, op in enumerate(NB201_OPS)}
_TABLE_RELPATH = ("nasbench201", "nb201_tss_all.csv.gz")

# Short metric names per dataset -> table column (see the table's README for the full list).
METRIC_ALIASES = {
    "cifar10": {"test": "c10_test_200", "valid": "c10v_valid_200", "valid_12": "c10v_valid_12",
                "test_12": "c10_test_12", "train_time_12": "c10v_train_time_12",
                "epoch_time": "c10_epoch_time"},
    "cifar100": {"test": "c100_test_200_nats", "valid": "c100_valid_200",
                 "valid_12": "c100_valid_12", "test_12": "c100_test_12",
                 "epoch_time": "c100_epoch_time"},
    "ImageNet16-120": {"test": "in16_test_200_nats", "valid": "in16_valid_200",
                       "valid_12": "in16_valid_12", "test_12": "in16_test_12",
                       "epoch_time": "in16_epoch_time"},
}
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}


class NASBench201Table:
    """The NB201 table in memory: rows by official index, O(1) lookup by ops code (e.g. '312030')."""

    def __init__(self, path: os.PathLike):
        self.path = pathlib.Path(path)
        with gzip.open(self.path, "rt", newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = list(reader)
        self.columns: List[str] = header
        text_cols = {"arch", "ops"}
        self.rows: List[Dict[str, object]] = []
        for r in rows:
            row = {k: (v if k in text_cols else (int(v) if k == "index" else float(v)))
                   for k, v in zip(header, r)}
            self.rows.append(row)
        self.rows.sort(key=lambda row: row["index"])
        self._by_ops = {row["ops"]: row for row in self.rows}
        if len(self.rows) != 15625 or len(self._by_ops) != 15625:
            raise ValueError(f"{self.path}: expected 15625 distinct architectures, got "
                             f"{len(self.rows)} rows / {len(self._by_ops)} distinct ops codes.")

    def row(self, ops_code: str) -> Dict[str, object]:
        try:
            return self._by_ops[ops_code]
        except KeyError:
            raise KeyError(f"ops code {ops_code!r} is not in {self.path}") from None

    def column(self, name: str):
        """All values of one column as a numpy array, by official index."""
        import numpy as np  # pylint: disable=import-outside-toplevel
        if name not in self.columns:
            raise KeyError(f"unknown column {name!r}; columns: {self.columns}")
        return np.array([row[name] for row in self.rows])


_TABLES: Dict[str, NASBench201Table] = {}
_TABLES_LOCK = threading.Lock()


def _default_table_path() -> pathlib.Path:
    root = os.environ.get("SYMNAS_DATA")
    if not root:
        raise FileNotFoundError(
            "NAS-Bench-201 table not given and the SYMNAS_DATA environment variable is not set: "
            "pass table='.../nb201_tss_all.csv.gz' or set SYMNAS_DATA to the folder holding "
            "nasbench201/nb201_tss_all.csv.gz.")
    return pathlib.Path(root, *_TABLE_RELPATH)


def load_nasbench201_table(path: Optional[os.PathLike] = None) -> NASBench201Table:
    """Loads (once per path, then cached) the NB201 table; default ``$SYMNAS_DATA/nasbench201/...``."""
    from_env = path is None
    path = pathlib.Path(_default_table_path() if from_env else path)
    key = str(path.resolve())
    with _TABLES_LOCK:
        table = _TABLES.get(key)
        if table is None:
            if not path.is_file():
                hint = (f" (from SYMNAS_DATA={os.environ.get('SYMNAS_DATA')})" if from_env else
                        " (or set SYMNAS_DATA and leave table=None)")
                raise FileNotFoundError(f"NAS-Bench-201 table {path} not found{hint}.")
            table = _TABLES[key] = NASBench201Table(path)
    return table


@pg.members([
    ("ops", pg.typing.List(pg.typing.Enum(NB201_OPS[0], list(NB201_OPS)), size=6),
     "Op on each edge, NB201 order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2); a pg.oneof per edge in the space."),
    ("dataset", pg.typing.Enum("cifar10", list(METRIC_ALIASES)), "Dataset whose results are queried."),
    ("table", pg.typing.Str().noneable(),
     "Path of nb201_tss_all.csv.gz; None means $SYMNAS_DATA/nasbench201/nb201_tss_all.csv.gz."),
    ("C", pg.typing.Int(min_value=1, default=16), "Channels of the first stage."),
    ("N", pg.typing.Int(min_value=1, default=5), "Cells per stage."),
])
class NASBench201(pg.Object):
    """A NAS-Bench-201 cell architecture, or (with ``ops`` left out) the space of all 15625."""

    @pg.explicit_method_override
    def __init__(self, ops=None, dataset: str = "cifar10", table: Optional[str] = None,
                 C: int = 16, N: int = 5, **kwargs):
        if ops is None:
            ops = [pg.oneof(NB201_OPS) for _ in NB201_EDGES]
        if table is not None:
            table = str(table)
        super().__init__(ops=ops, dataset=dataset, table=table, C=C, N=N, **kwargs)

    @classmethod
    def from_arch_str(cls, arch_str: str, **kwargs) -> "NASBench201":
        """The architecture of an official string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        ops = []
        for node, part in enumerate(arch_str.split("+"), start=1):
            entries = [e for e in part.split("|") if e]
            if len(entries) != node:
                raise ValueError(f"bad NAS-Bench-201 arch string {arch_str!r}: node {node} needs "
                                 f"{node} inputs, got {len(entries)}.")
            for i, entry in enumerate(entries):
                op, _, src = entry.partition("~")
                if op not in NB201_OPS or src != str(i):
                    raise ValueError(f"bad NAS-Bench-201 arch string {arch_str!r}: entry {entry!r}.")
                ops.append(op)
        if len(ops) != 6:
            raise ValueError(f"bad NAS-Bench-201 arch string {arch_str!r}: 3 nodes expected.")
        return cls(ops=ops, **kwargs)

    @classmethod
    def from_index(cls, index: int, **kwargs) -> "NASBench201":
        """The architecture with an official NB201 index (0..15624)."""
        table = load_nasbench201_table(kwargs.get("table"))
        if not 0 <= index < len(table.rows):
            raise IndexError(f"NAS-Bench-201 index {index} is outside [0, {len(table.rows)}).")
        return cls.from_arch_str(table.rows[index]["arch"], **kwargs)

    def _check_concrete(self):
        if not self.sym_init_args.ops.is_deterministic:
            raise ValueError("this NASBench201 is a search space (its ops are search points); "
                             "materialise an architecture first, e.g. with pg.sample or pg.random_sample.")

    @property
    def ops_code(self) -> str:
        """Six digits, one per edge (0=none 1=skip 2=conv1x1 3=conv3x3 4=avgpool), the table's key."""
        self._check_concrete()
        return "".join(_OP_CODE[op] for op in self.ops)

    @property
    def arch_str(self) -> str:
        """The official NB201 architecture string."""
        self._check_concrete()
        ops = list(self.ops)
        nodes, e = [], 0
        for node in (1, 2, 3):
            nodes.append("|" + "|".join(f"{ops[e + i]}~{i}" for i in range(node)) + "|")
            e += node
        return "+".join(nodes)

    def lookup(self) -> Dict[str, object]:
        """This architecture's row of the table (a dict; values are floats except arch/ops/index)."""
        return load_nasbench201_table(self.table).row(self.ops_code)

    @property
    def index(self) -> int:
        """The official NAS-Bench-201 index."""
        return int(self.lookup()["index"])

    def query(self, metric: str = "test") -> float:
        """One metric: a short name for ``dataset`` (test, valid, valid_12, test_12, train_time_12,
        epoch_time) or any table column (e.g. ``c10v_valid_12``)."""
        row = self.lookup()
        column = METRIC_ALIASES[self.dataset].get(metric, metric)
        if column not in row:
            raise KeyError(f"unknown NAS-Bench-201 metric {metric!r} for dataset {self.dataset!r}; "
                           f"short names: {sorted(METRIC_ALIASES[self.dataset])}, columns: "
                           f"{sorted(row)}.")
        return float(row[column])

    @property
    def num_classes(self) -> int:
        return _NUM_CLASSES[self.dataset]

    def build(self, num_classes: Optional[int] = None):
        """The torch network (``symnas.nn.nasbench201.NASBench201Network``) of this cell."""
        self._check_concrete()
        from symnas.nn.nasbench201 import NASBench201Network  # pylint: disable=import-outside-toplevel
        return NASBench201Network(list(self.ops), C=self.C, N=self.N,
                                  num_classes=num_classes or self.num_classes)
