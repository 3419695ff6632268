"""Text that fits a terminal: a table that drops the columns that do not fit, lines clipped to a width.

``symnas show`` prints through these so its default output fits 80 columns; ``--wide`` passes
``width=None`` and everything is printed whole.

Example::

    print(fit_table(study.trials, width=80, keep=["status", "accuracy"]))
    print(clip_lines(pg.format(study.best), width=80, max_lines=30))
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence


def _number(value: Any) -> str:
    return f"{value:.6g}"


def fit_table(frame, width: Optional[int] = 80, keep: Sequence[str] = ()) -> str:
    """``frame`` (a pandas DataFrame) as text at most ``width`` characters wide: columns are dropped
    from the right, those in ``keep`` last, and a last line names what was left out."""
    if width is None:
        return frame.to_string(float_format=_number)
    columns: List[str] = list(frame.columns)
    dropped: List[str] = []
    while True:
        text = frame[columns].to_string(float_format=_number)
        if max(len(line) for line in text.splitlines()) <= width or not columns:
            break
        optional = [c for c in columns if c not in keep]
        victim = optional[-1] if optional else columns[-1]
        columns.remove(victim)
        dropped.insert(0, victim)
    lines = [line[:width] for line in text.splitlines()]
    if dropped:
        lines.append(clip(f"(--wide shows every column; not shown: {', '.join(map(str, dropped))})", width))
    return "\n".join(lines)


def clip(line: str, width: Optional[int]) -> str:
    """``line`` cut to ``width`` characters, ending in '...' when cut."""
    if width is None or len(line) <= width:
        return line
    return line[:width - 3] + "..."


def clip_lines(text: str, width: Optional[int] = 80, max_lines: Optional[int] = 30) -> str:
    """``text`` with each line clipped to ``width`` and at most ``max_lines`` lines (None: no limit)."""
    lines = [clip(line, width) for line in text.splitlines()]
    if max_lines is not None and len(lines) > max_lines:
        hidden = len(lines) - max_lines + 1
        lines = lines[:max_lines - 1] + [clip(f"... ({hidden} more lines; --wide shows them all)", width)]
    return "\n".join(lines)
