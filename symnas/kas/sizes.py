"""Tensor sizes as monomials over the kernel's symbols: ``C*G/4``, ``x0``, ``9*C``.

A kernel is sampled once and applied to many convolutions, so its tensor sizes are not
numbers but expressions over symbols that each target conv fills in:

- static symbols: ``C`` (input channels), ``O`` (output channels), ``H``, ``W`` (input
  height, width), ``S`` (stride) and ``G`` (the global group count, one value for the whole
  network, seed 003 §6.3);
- dynamic variables ``x0`` ... ``x7``: free channel counts made by weighted primitives
  (``FC(out="x0")``), fixed later by the shape-matching solver or the budget solver.

A :class:`Size` is ``num/den * prod(symbol**power)``: immutable, hashable, and cheap to
multiply, divide and evaluate (the sampler builds thousands per second).

Example::

    from symnas.kas.sizes import Size
    s = Size.parse("C/G") * Size.parse("3")
    assert str(s) == "3*C/G" and s.value({"C": 64, "G": 4}) == 48
"""
from __future__ import annotations

import math
import operator
import re
from fractions import Fraction
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = ["Size", "STATIC", "DYNAMIC", "SYMBOLS", "NUM_DYNAMIC", "SizeError", "lcm"]

STATIC = ("C", "O", "H", "W", "S", "G")
NUM_DYNAMIC = 8
DYNAMIC = tuple(f"x{i}" for i in range(NUM_DYNAMIC))
SYMBOLS = STATIC + DYNAMIC
_INDEX = {name: i for i, name in enumerate(SYMBOLS)}
_NSYM = len(SYMBOLS)
_FIRST_DYN = len(STATIC)
_ZERO = (0,) * _NSYM


class SizeError(ValueError):
    """A size expression that cannot be parsed or is not a positive monomial."""


class Size:
    """``num/den * prod(SYMBOLS[i] ** pw[i])``; reduced, immutable, hashable."""

    __slots__ = ("num", "den", "pw", "_hash")

    def __init__(self, num: int = 1, den: int = 1, pw: Tuple[int, ...] = _ZERO):
        if num <= 0 or den <= 0:
            raise SizeError(f"a size must be positive, got {num}/{den}")
        if den != 1:
            g = math.gcd(num, den)
            if g != 1:
                num, den = num // g, den // g
        self.num, self.den, self.pw = num, den, pw
        self._hash = hash((num, den, pw))

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def symbol(cls, name: str) -> "Size":
        if name not in _INDEX:
            raise SizeError(f"unknown symbol {name!r}; symbols are {', '.join(SYMBOLS)}")
        pw = list(_ZERO)
        pw[_INDEX[name]] = 1
        return cls(1, 1, tuple(pw))

    @classmethod
    def number(cls, value: int) -> "Size":
        return cls(int(value), 1)

    @classmethod
    def dynamic(cls, index: int) -> "Size":
        return cls.symbol(DYNAMIC[index])

    @classmethod
    def parse(cls, text) -> "Size":
        """Parses ``"3*C/G"``, ``"x0"``, ``"H^2"``, ``"C*H*W/S^2"``, ``"1"`` (no other syntax)."""
        if isinstance(text, Size):
            return text
        if isinstance(text, int) and not isinstance(text, bool):
            return cls.number(text)
        if not isinstance(text, str) or not _SYNTAX.fullmatch(text.replace(" ", "")):
            raise SizeError(f"cannot parse size {text!r}: write a product like '3*C/G' or 'x0'")
        num, den, pw = 1, 1, list(_ZERO)
        for sign, factor in _FACTOR.findall("*" + text.replace(" ", "")):
            base, _, power = factor.partition("^")
            power = int(power) if power else 1
            if base.isdigit():
                value = int(base) ** power
                if value == 0:
                    raise SizeError(f"size {text!r} is zero")
                if sign == "*":
                    num *= value
                else:
                    den *= value
            else:
                if base not in _INDEX:
                    raise SizeError(f"size {text!r}: unknown symbol {base!r} (symbols: {', '.join(SYMBOLS)})")
                pw[_INDEX[base]] += power if sign == "*" else -power
        return cls(num, den, tuple(pw))

    # ---- algebra -----------------------------------------------------------------------------
    def __mul__(self, other: "Size") -> "Size":
        if other.pw is _ZERO and other.num == 1 and other.den == 1:
            return self
        return Size(self.num * other.num, self.den * other.den, tuple(map(operator.add, self.pw, other.pw)))

    def __truediv__(self, other: "Size") -> "Size":
        return Size(self.num * other.den, self.den * other.num, tuple(map(operator.sub, self.pw, other.pw)))

    def __pow__(self, k: int) -> "Size":
        if k >= 0:
            return Size(self.num ** k, self.den ** k, tuple(a * k for a in self.pw))
        return Size(self.den ** -k, self.num ** -k, tuple(a * k for a in self.pw))

    def __eq__(self, other) -> bool:
        return isinstance(other, Size) and self._hash == other._hash and self.num == other.num and \
            self.den == other.den and self.pw == other.pw

    def __hash__(self) -> int:
        return self._hash

    def is_one(self) -> bool:
        return self.num == 1 and self.den == 1 and self.pw == _ZERO

    # ---- structure ---------------------------------------------------------------------------
    def dynamic_vars(self) -> List[int]:
        """Indices (0-based, ``x<i>``) of the dynamic variables in this size."""
        return [i - _FIRST_DYN for i in range(_FIRST_DYN, _NSYM) if self.pw[i]]

    def power_of(self, var: int) -> int:
        return self.pw[_FIRST_DYN + var]

    def is_static(self) -> bool:
        return not any(self.pw[_FIRST_DYN:])

    def uses(self, name: str) -> bool:
        return self.pw[_INDEX[name]] != 0

    def numerator(self) -> "Size":
        return Size(self.num, 1, tuple(p if p > 0 else 0 for p in self.pw))

    def denominator(self) -> "Size":
        return Size(self.den, 1, tuple(-p if p < 0 else 0 for p in self.pw))

    def factors(self, limit: int = 64) -> List["Size"]:
        """Every monomial that divides this one's numerator (numbers by their divisors), at most ``limit``."""
        n = self.numerator()
        out = [Size()]
        for d in _divisors(n.num)[1:]:
            out.append(Size(d))
        for i, p in enumerate(n.pw):
            if p <= 0:
                continue
            base = list(out)
            for k in range(1, p + 1):
                pw = list(_ZERO)
                pw[i] = k
                step = Size(1, 1, tuple(pw))
                out.extend(b * step for b in base)
        return out[:limit]

    def substitute(self, var: int, value: "Size") -> "Size":
        """``x<var>`` replaced by ``value`` (a monomial)."""
        p = self.pw[_FIRST_DYN + var]
        if not p:
            return self
        pw = list(self.pw)
        pw[_FIRST_DYN + var] = 0
        return Size(self.num, self.den, tuple(pw)) * (value ** p)

    def rename(self, mapping: Mapping[int, int]) -> "Size":
        """Dynamic variables renamed: ``x<i>`` becomes ``x<mapping[i]>`` (others unchanged)."""
        if not any(self.pw[_FIRST_DYN:]):
            return self
        pw = list(self.pw)
        for i in range(NUM_DYNAMIC):
            pw[_FIRST_DYN + i] = 0
        for i in range(NUM_DYNAMIC):
            p = self.pw[_FIRST_DYN + i]
            if p:
                pw[_FIRST_DYN + mapping.get(i, i)] += p
        return Size(self.num, self.den, tuple(pw))

    # ---- evaluation --------------------------------------------------------------------------
    def value(self, env: Mapping[str, int]) -> Fraction:
        """The size for the symbols' values in ``env`` (a Fraction; integral when the size is legal)."""
        num, den = self.num, self.den
        for i, p in enumerate(self.pw):
            if p:
                v = env[SYMBOLS[i]]
                if p > 0:
                    num *= v ** p
                else:
                    den *= v ** -p
        return Fraction(num, den)

    def float_value(self, env: Mapping[str, int]) -> float:
        out = self.num / self.den
        for i, p in enumerate(self.pw):
            if p:
                out *= env[SYMBOLS[i]] ** p
        return out

    def is_integer(self, env: Mapping[str, int]) -> bool:
        """Whether the size is a positive integer for ``env`` (integer arithmetic, no Fraction)."""
        num, den = self.num, self.den
        for i, p in enumerate(self.pw):
            if p:
                v = env[SYMBOLS[i]]
                if p > 0:
                    num *= v ** p
                else:
                    den *= v ** -p
        return num % den == 0

    def int_value(self, env: Mapping[str, int]) -> int:
        """The size as an int; raises SizeError when it is not a positive integer for ``env``."""
        v = self.value(env)
        if v.denominator != 1 or v <= 0:
            raise SizeError(f"size {self} is {v} for {dict(env)}: not a positive integer")
        return int(v)

    def static_value(self, env: Mapping[str, int]) -> Fraction:
        """The value with every dynamic variable set to 1 (their coefficient)."""
        num, den = self.num, self.den
        for i in range(_FIRST_DYN):
            p = self.pw[i]
            if p:
                v = env[SYMBOLS[i]]
                if p > 0:
                    num *= v ** p
                else:
                    den *= v ** -p
        return Fraction(num, den)

    # ---- text ------------------------------------------------------------------------------------
    def __str__(self) -> str:
        top = [str(self.num)] if self.num != 1 else []
        bottom = [str(self.den)] if self.den != 1 else []
        for i, p in enumerate(self.pw):
            if p > 0:
                top.append(SYMBOLS[i] + (f"^{p}" if p > 1 else ""))
            elif p < 0:
                bottom.append(SYMBOLS[i] + (f"^{-p}" if p < -1 else ""))
        text = "*".join(top) if top else "1"
        return text + "".join("/" + b for b in bottom)

    def __repr__(self) -> str:
        return f"Size({str(self)!r})"


_SYNTAX = re.compile(r"(\d+|[A-Za-z]\w*)(\^\d+)?([*/](\d+|[A-Za-z]\w*)(\^\d+)?)*")
_FACTOR = re.compile(r"([*/])(\d+(?:\^\d+)?|[A-Za-z]\w*(?:\^\d+)?)")


def _divisors(n: int) -> List[int]:
    small, large = [], []
    i = 1
    while i * i <= n:
        if n % i == 0:
            small.append(i)
            if i * i != n:
                large.append(n // i)
        i += 1
    return small + large[::-1]


def lcm(values: Iterable[int]) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


def env_of(target, groups: int) -> Dict[str, int]:
    """The static symbols' values for a target conv (anything with c_in, c_out, h, w, stride)."""
    return {"C": target.c_in, "O": target.c_out, "H": target.h, "W": target.w, "S": target.stride, "G": groups}
