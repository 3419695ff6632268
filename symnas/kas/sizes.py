"""Tensor sizes as monomials over the kernel's symbols: ``C*G/4``, ``x0``, ``9*C``.

A kernel is sampled once and applied to many convolutions, so its tensor sizes are not
numbers but expressions over symbols that each target conv fills in:

- static symbols: ``C`` (input channels), ``O`` (output channels), ``H``, ``W`` (input
  height, width), ``S`` (stride) and ``G`` (the global group count, one value for the whole
  network, seed 003 §6.3);
- dynamic variables ``x0`` ... ``x7``: free channel counts made by weighted primitives
  (``FC(out="x0")``), fixed later by the shape-matching solver or the budget solver.

A :class:`Size` is ``num/den * prod(symbol**power)``: immutable, interned (equal sizes are one
object, so hashing and comparing them is by identity), and cheap to
multiply, divide and evaluate (the sampler builds thousands per second).

Example::

    from symnas.kas.sizes import Size
    s = Size.parse("C/G") * Size.parse("3")
    assert str(s) == "3*C/G" and s.value({"C": 64, "G": 4}) == 48
"""
from __future__ import annotations

import math
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
# The exponents are packed in one int, 6 bits each, offset by 32: multiplying two sizes adds their
# ints, so the sampler's inner loop does integer arithmetic instead of building tuples.
_BITS, _OFF, _MASK = 6, 32, 63
_ZERO = sum(_OFF << (_BITS * i) for i in range(_NSYM))
_DYN_SHIFT = _BITS * _FIRST_DYN
_ZERO_DYN = _ZERO >> _DYN_SHIFT
_SPATIAL_SHIFTS = tuple(_BITS * _INDEX[name] for name in ("H", "W", "S"))


def _pack(exps) -> int:
    out = _ZERO
    for i, e in enumerate(exps):
        if e:
            if not -_OFF <= e < _OFF:
                raise SizeError(f"exponent {e} of {SYMBOLS[i]} is out of range")
            out += e << (_BITS * i)
    return out


def _unit(i: int) -> int:
    return 1 << (_BITS * i)


class SizeError(ValueError):
    """A size expression that cannot be parsed or is not a positive monomial."""


class Size:
    """``num/den * prod(SYMBOLS[i] ** e_i)``; reduced, immutable and interned (exponents packed in ``pw``).

    Equal sizes are the same object (``Size(2, 4) is Size(1, 2)``), so hashing and equality are
    identity (C speed in the sampler's dict keys) and the algebra is memoized per operand pair.
    """

    __slots__ = ("num", "den", "pw", "_dyn", "_exps", "spatial")

    def __new__(cls, num: int = 1, den: int = 1, pw: int = _ZERO):
        key = (num, den, pw)
        hit = _TABLE.get(key)
        if hit is not None:
            return hit
        if num <= 0 or den <= 0:
            raise SizeError(f"a size must be positive, got {num}/{den}")
        num, den = int(num), int(den)
        if den != 1:
            g = math.gcd(num, den)
            if g != 1:
                num, den = num // g, den // g
        reduced = (num, den, pw)
        self = _TABLE.get(reduced)
        if self is None:
            self = object.__new__(cls)
            self.num, self.den, self.pw = num, den, pw
            d = pw >> _DYN_SHIFT
            self._dyn = () if d == _ZERO_DYN else \
                tuple(i for i in range(NUM_DYNAMIC) if ((d >> (_BITS * i)) & _MASK) != _OFF)
            self._exps = None
            # Whether it uses H, W or S (an image size: never a channel size; read in the sampler's loops).
            self.spatial = any(((pw >> shift) & _MASK) != _OFF for shift in _SPATIAL_SHIFTS)
            self = _TABLE.setdefault(reduced, self)     # atomic: two threads get the same object
        _TABLE[key] = self
        return self

    def __reduce__(self):          # pickling and deepcopy go through the interning constructor
        return Size, (self.num, self.den, self.pw)

    def __copy__(self) -> "Size":
        return self

    def __deepcopy__(self, memo) -> "Size":
        return self

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def symbol(cls, name: str) -> "Size":
        if name not in _INDEX:
            raise SizeError(f"unknown symbol {name!r}; symbols are {', '.join(SYMBOLS)}")
        return cls(1, 1, _ZERO + _unit(_INDEX[name]))

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
        hit = _PARSED.get(text) if isinstance(text, str) else None
        if hit is not None:
            return hit
        if not isinstance(text, str) or not _SYNTAX.fullmatch(text.replace(" ", "")):
            raise SizeError(f"cannot parse size {text!r}: write a product like '3*C/G' or 'x0'")
        num, den, exps = 1, 1, [0] * _NSYM
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
                exps[_INDEX[base]] += power if sign == "*" else -power
        out = _PARSED[text] = cls(num, den, _pack(exps))
        return out

    # ---- algebra (memoized: sizes are interned) ------------------------------------------------
    def __mul__(self, other: "Size") -> "Size":
        key = (self, other)
        out = _MUL.get(key)
        if out is None:
            out = _MUL[key] = Size(self.num * other.num, self.den * other.den, self.pw + other.pw - _ZERO)
        return out

    def __truediv__(self, other: "Size") -> "Size":
        key = (self, other)
        out = _DIV.get(key)
        if out is None:
            out = _DIV[key] = Size(self.num * other.den, self.den * other.num, self.pw - other.pw + _ZERO)
        return out

    def __pow__(self, k: int) -> "Size":
        pw = _ZERO + k * (self.pw - _ZERO)
        if k >= 0:
            return Size(self.num ** k, self.den ** k, pw)
        return Size(self.den ** -k, self.num ** -k, pw)

    def is_one(self) -> bool:
        return self is _ONE_SIZE

    def exponents(self) -> List[int]:
        exps = self._exps
        if exps is None:
            pw = self.pw
            exps = self._exps = tuple(((pw >> (_BITS * i)) & _MASK) - _OFF for i in range(_NSYM))
        return list(exps)

    def _e(self) -> Tuple[int, ...]:
        exps = self._exps
        if exps is None:
            self.exponents()
            exps = self._exps
        return exps

    # ---- structure ---------------------------------------------------------------------------
    def dynamic_vars(self) -> List[int]:
        """Indices (0-based, ``x<i>``) of the dynamic variables in this size (``_dyn``: the same, a tuple)."""
        return list(self._dyn)

    def power_of(self, var: int) -> int:
        return ((self.pw >> (_BITS * (_FIRST_DYN + var))) & _MASK) - _OFF

    def is_static(self) -> bool:
        return not self._dyn

    def uses(self, name: str) -> bool:
        return ((self.pw >> (_BITS * _INDEX[name])) & _MASK) != _OFF

    def numerator(self) -> "Size":
        out = _NUMERATORS.get(self)
        if out is None:
            out = _NUMERATORS[self] = Size(self.num, 1, _pack([e if e > 0 else 0 for e in self._e()]))
        return out

    def denominator(self) -> "Size":
        out = _DENOMINATORS.get(self)
        if out is None:
            out = _DENOMINATORS[self] = Size(self.den, 1, _pack([-e if e < 0 else 0 for e in self._e()]))
        return out

    def factors(self, limit: int = 64) -> List["Size"]:
        """Every monomial that divides this one's numerator (numbers by their divisors), at most ``limit``."""
        key = (self, limit)
        out = _FACTORS.get(key)
        if out is None:
            out = _FACTORS[key] = self._factors(limit)
        return list(out)

    def _factors(self, limit: int) -> List["Size"]:
        n = self.numerator()
        out = [Size()]
        for d in _divisors(n.num)[1:]:
            out.append(Size(d))
        for i, p in enumerate(n.exponents()):
            if p <= 0:
                continue
            base = list(out)
            for k in range(1, p + 1):
                step = Size(1, 1, _ZERO + k * _unit(i))
                out.extend(b * step for b in base)
        return out[:limit]

    def substitute(self, var: int, value: "Size") -> "Size":
        """``x<var>`` replaced by ``value`` (a monomial)."""
        if var not in self._dyn:
            return self
        key = (self, var, value)
        out = _SUBST.get(key)
        if out is None:
            p = self.power_of(var)
            rest = Size(self.num, self.den, self.pw - p * _unit(_FIRST_DYN + var))
            out = _SUBST[key] = rest * (value ** p)
        return out

    def rename(self, mapping: Mapping[int, int]) -> "Size":
        """Dynamic variables renamed: ``x<i>`` becomes ``x<mapping[i]>`` (others unchanged)."""
        if not self._dyn:
            return self
        key = (self, *mapping.items())
        out = _RENAME.get(key)
        if out is None:
            out = _RENAME[key] = self._renamed(mapping)
        return out

    def _renamed(self, mapping: Mapping[int, int]) -> "Size":
        exps = self._e()
        out = list(exps[:_FIRST_DYN]) + [0] * NUM_DYNAMIC
        for i in range(NUM_DYNAMIC):
            p = exps[_FIRST_DYN + i]
            if p:
                out[_FIRST_DYN + mapping.get(i, i)] += p
        return Size(self.num, self.den, _pack(out))

    # ---- evaluation --------------------------------------------------------------------------
    def _ratio(self, env: Mapping[str, int], symbols: int = _NSYM) -> Tuple[int, int]:
        """(numerator, denominator) for ``env``, over the first ``symbols`` symbols (the rest count 1)."""
        num, den = self.num, self.den
        exps = self._e()
        for i in range(symbols):
            p = exps[i]
            if p:
                v = env[SYMBOLS[i]]
                if p > 0:
                    num *= v ** p
                else:
                    den *= v ** -p
        return num, den

    def value(self, env: Mapping[str, int]) -> Fraction:
        """The size for the symbols' values in ``env`` (a Fraction; integral when the size is legal)."""
        return Fraction(*self._ratio(env))

    def float_value(self, env: Mapping[str, int]) -> float:
        out = self.num / self.den
        pw = self.pw
        for i in range(_NSYM):
            p = ((pw >> (_BITS * i)) & _MASK) - _OFF
            if p:
                out *= env[SYMBOLS[i]] ** p
        return out

    def is_integer(self, env: Mapping[str, int]) -> bool:
        """Whether the size is a positive integer for ``env`` (integer arithmetic, no Fraction)."""
        num, den = self._ratio(env)
        return num % den == 0

    def int_value(self, env: Mapping[str, int]) -> int:
        """The size as an int; raises SizeError when it is not a positive integer for ``env``."""
        v = self.value(env)
        if v.denominator != 1 or v <= 0:
            raise SizeError(f"size {self} is {v} for {dict(env)}: not a positive integer")
        return int(v)

    def static_value(self, env: Mapping[str, int]) -> Fraction:
        """The value with every dynamic variable set to 1 (their coefficient)."""
        return Fraction(*self._ratio(env, _FIRST_DYN))

    # ---- text ------------------------------------------------------------------------------------
    def __str__(self) -> str:
        top = [str(self.num)] if self.num != 1 else []
        bottom = [str(self.den)] if self.den != 1 else []
        for i, p in enumerate(self._e()):
            if p > 0:
                top.append(SYMBOLS[i] + (f"^{p}" if p > 1 else ""))
            elif p < 0:
                bottom.append(SYMBOLS[i] + (f"^{-p}" if p < -1 else ""))
        text = "*".join(top) if top else "1"
        return text + "".join("/" + b for b in bottom)

    def __repr__(self) -> str:
        return f"Size({str(self)!r})"


_TABLE: Dict[tuple, Size] = {}       # (num, den, pw) -> the one Size of that value
_MUL: Dict[tuple, Size] = {}
_DIV: Dict[tuple, Size] = {}
_SUBST: Dict[tuple, Size] = {}
_RENAME: Dict[tuple, Size] = {}
_NUMERATORS: Dict[Size, Size] = {}
_DENOMINATORS: Dict[Size, Size] = {}
_FACTORS: Dict[tuple, list] = {}
_PARSED: Dict[str, Size] = {}
_ONE_SIZE = Size()

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
