"""Score formulas: rank by similarity plus weighted terms of the items' numeric fields.

    score = similarity + Σ wᵢ · termᵢ(item)

Each term is a function of one numeric field x of the item (docs/score-formula.md):

- log1p: log(1 + x) (popularity counts); x ≤ -1 counts as missing;
- value: x / scale;
- gauss, exp, linear: decays around `origin` as Elasticsearch and Qdrant define them, with
  d = max(0, |x - origin| - offset): gauss decay^((d/scale)²), exp decay^(d/scale), linear
  max(0, 1 - (1 - decay)·d/scale); each is 1 within `offset` of the origin and `decay` at
  offset + scale. The origin may be "now" (the request's time, whole Unix seconds).

An item without a value in the field takes the term's `missing` value (0 unless stated).

The prior part P(item) = Σ wᵢ · termᵢ is computed in float64, term by term in formula order
(((w₀t₀) + w₁t₁) + ...), and the formula's score is float64(similarity) + P: the same
arithmetic wherever it is computed, so a brute force over every item reproduces it bit for bit.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from embedrec.server.errors import InvalidArgument, quoted

ScoreFunction = Literal["log1p", "value", "gauss", "exp", "linear"]
FUNCTIONS: tuple[ScoreFunction, ...] = ("log1p", "value", "gauss", "exp", "linear")
DECAYS = ("gauss", "exp", "linear")
DEFAULT_DECAY = 0.5
# Longest formula text accepted (the --score-formula grammar), before any parsing.
MAX_EXPRESSION_CHARS = 4_096
Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ScoreTermSpec:
    """One term as requested (see ScoreTerm in the proto): None leaves a parameter to its
    default (weight 1, scale 1, decay 0.5, missing 0)."""

    field: str
    function: str
    weight: float | None = None
    origin: float | None = None
    origin_now: bool = False
    scale: float | None = None
    offset: float | None = None
    decay: float | None = None
    missing: float | None = None


@dataclass(frozen=True)
class ScoreFormulaSpec:
    """A formula as requested: its terms (none: rank by similarity alone) or its text (the
    grammar of `parse_formula`), not both."""

    terms: tuple[ScoreTermSpec, ...] = ()
    expression: str = ""


@dataclass(frozen=True)
class ScoreTerm:
    """A checked term with every parameter resolved ("now" to a number)."""

    field: str
    function: ScoreFunction
    weight: float
    origin: float = 0.0
    scale: float = 1.0
    offset: float = 0.0
    decay: float = DEFAULT_DECAY
    missing: float = 0.0

    def values(self, x: Float64Array) -> Float64Array:
        """The term of each field value in `x` (float64, NaN: no value), before its weight."""
        with np.errstate(all="ignore"):
            if self.function == "log1p":
                missing = ~(x > -1.0)  # NaN compares False
                out = np.log1p(np.where(missing, 0.0, x))
            elif self.function == "value":
                missing = np.isnan(x)
                out = x / self.scale
            else:
                missing = np.isnan(x)
                distance = np.maximum(np.abs(x - self.origin) - self.offset, 0.0) / self.scale
                if self.function == "gauss":
                    out = np.exp(math.log(self.decay) * (distance * distance))
                elif self.function == "exp":
                    out = np.exp(math.log(self.decay) * distance)
                else:
                    out = np.maximum(1.0 - (1.0 - self.decay) * distance, 0.0)
        result: Float64Array = np.where(missing, self.missing, out)
        return result


@dataclass(frozen=True)
class ScoreFormula:
    """A checked formula of at least one term (hashable: a store may cache its prior)."""

    terms: tuple[ScoreTerm, ...]

    def parts(self, values_of: Callable[[str], Float64Array]) -> Float64Array:
        """Each term's weighted part (rows, terms) for the rows `values_of(field)` returns."""
        return np.stack([weighted_part(term, values_of(term.field)) for term in self.terms], axis=1)

    def prior(
        self,
        values_of: Callable[[str], Float64Array],
        part_of: Callable[[ScoreTerm], Float64Array] | None = None,
    ) -> Float64Array:
        """P = Σ wᵢ·termᵢ for the rows `values_of(field)` returns, summed in term order;
        `part_of(term)` may supply a term's weighted part (a cache) instead."""
        total: Float64Array | None = None
        for term in self.terms:
            part = part_of(term) if part_of is not None else weighted_part(term, values_of(term.field))
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused by check_prior
                total = part if total is None else total + part
        assert total is not None
        return total

    def text(self) -> str:
        """The formula in the grammar of `parse_formula` (reads back to an equal formula)."""
        text = ""
        for position, term in enumerate(self.terms):
            sign = "-" if math.copysign(1.0, term.weight) < 0 else "+"
            text += (("-" if sign == "-" else "") if position == 0 else f" {sign} ") + _term_text(term)
        return text


def weighted_part(term: ScoreTerm, values: Float64Array) -> Float64Array:
    """weight x term of each of `values` (float64, NaN: no value)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused by check_prior
        part: Float64Array = term.weight * term.values(np.asarray(values, dtype=np.float64))
    return part


def check_formula(
    spec: ScoreFormulaSpec,
    kinds: Mapping[str, str],
    *,
    max_terms: int,
    field: str,
    now: float | None = None,
) -> ScoreFormula | None:
    """`spec` validated against the catalog's fields (name -> "numeric" | "categorical"), with
    "now" resolved to `now` (Unix seconds; default: the clock's whole second); None when it has no term
    (similarity alone). InvalidArgument naming `field` (and the term) for more than `max_terms`
    terms, an unknown or categorical field, a function it does not know, a non-finite number, a
    scale that is not > 0, an offset < 0, a decay outside (0, 1), a parameter the function does
    not take, or an unparsable expression."""
    if spec.expression and spec.terms:
        raise InvalidArgument(f"{field}: give terms or expression, not both", field=field)
    if spec.expression:
        spec = parse_formula(spec.expression, field=f"{field}.expression")
    if len(spec.terms) > max_terms:
        raise InvalidArgument(
            f"{field}.terms has {len(spec.terms)} entries; the limit is max_score_terms={max_terms}",
            field=f"{field}.terms",
        )
    if not spec.terms:
        return None
    # Whole seconds: concurrent requests share "now", so their searches share one pass (and the
    # prior cache) instead of one each; a timestamp's scale is far above a second.
    moment = float(math.floor(time.time())) if now is None else now
    return ScoreFormula(
        tuple(_checked_term(term, kinds, f"{field}.terms[{i}]", moment) for i, term in enumerate(spec.terms))
    )


def _checked_term(term: ScoreTermSpec, kinds: Mapping[str, str], name: str, now: float) -> ScoreTerm:
    kind = kinds.get(term.field)
    if kind is None:
        known = ", ".join(sorted(key for key, value in kinds.items() if value == "numeric")) or "none"
        raise InvalidArgument(
            f"{name}.field: the items have no field {quoted(term.field)} (numeric fields: {known})",
            field=f"{name}.field",
        )
    if kind != "numeric":
        raise InvalidArgument(
            f"{name}.field: {quoted(term.field)} is categorical; a score term needs a numeric field",
            field=f"{name}.field",
        )
    if term.function not in FUNCTIONS:
        raise InvalidArgument(
            f"{name}.function: unknown function {quoted(term.function)}; use {', '.join(FUNCTIONS)}",
            field=f"{name}.function",
        )
    for label in ("weight", "origin", "scale", "offset", "decay", "missing"):
        value = getattr(term, label)
        if value is not None and not math.isfinite(value):
            raise InvalidArgument(f"{name}.{label} must be finite, got {value}", field=f"{name}.{label}")
    decaying = term.function in DECAYS
    if not decaying:
        for label in ("origin", "offset", "decay"):
            if getattr(term, label) is not None or (label == "origin" and term.origin_now):
                raise InvalidArgument(
                    f"{name}.{label}: {term.function} takes no {label} (only the decays do)", field=f"{name}.{label}"
                )
    if term.function == "log1p" and term.scale is not None:
        raise InvalidArgument(f"{name}.scale: log1p takes no scale (weight it instead)", field=f"{name}.scale")
    if decaying and (term.origin is None) == (not term.origin_now):
        raise InvalidArgument(
            f"{name}.origin: a {term.function} decay needs an origin: a number or now, one of them",
            field=f"{name}.origin",
        )
    scale = 1.0 if term.scale is None else term.scale
    if not scale > 0:
        raise InvalidArgument(f"{name}.scale must be > 0, got {scale}", field=f"{name}.scale")
    offset = 0.0 if term.offset is None else term.offset
    if offset < 0:
        raise InvalidArgument(f"{name}.offset must be >= 0, got {offset}", field=f"{name}.offset")
    decay = DEFAULT_DECAY if term.decay is None else term.decay
    if not 0 < decay < 1:
        raise InvalidArgument(f"{name}.decay must be between 0 and 1 (exclusive), got {decay}", field=f"{name}.decay")
    origin = now if term.origin_now else (term.origin or 0.0)
    return ScoreTerm(
        term.field,
        term.function,
        1.0 if term.weight is None else term.weight,
        origin=float(origin),
        scale=float(scale),
        offset=float(offset),
        decay=float(decay),
        missing=0.0 if term.missing is None else float(term.missing),
    )


def check_prior(prior: Float64Array, formula: ScoreFormula, *, field: str) -> None:
    """InvalidArgument naming `field` when the formula overflows (a non-finite prior) for some
    item: a ranking of infinities would not be a ranking."""
    if not np.isfinite(prior).all():
        raise InvalidArgument(
            f"{field}: the formula {quoted(formula.text())} is not finite for some items (a weight or 1/scale "
            "too large for their values); lower it",
            field=field,
        )


class PriorCache:
    """The prior part of every item under the last few formulas, and their terms' weighted
    parts (float64 (n,) each: 8 MB per million items): a server's default formula is computed
    once per catalog, not per search, and a formula with a decay around "now" (a new origin every
    request) recomputes only that term."""

    def __init__(self, values_of: Callable[[str], Float64Array], size: int = 4) -> None:
        """`values_of(field)` gives a numeric field's values of every item (NaN: none); `size`
        formulas and 2 x `size` terms are kept."""
        self._values_of = values_of
        self._size = size
        self._priors: OrderedDict[ScoreFormula, Float64Array] = OrderedDict()
        self._parts: OrderedDict[ScoreTerm, Float64Array] = OrderedDict()
        self._lock = threading.Lock()

    def prior(self, formula: ScoreFormula, *, field: str = "score_formula") -> Float64Array:
        """P of every item (read-only); InvalidArgument naming `field` when it is not finite."""
        with self._lock:
            found = self._priors.get(formula)
            if found is not None:
                self._priors.move_to_end(formula)
                return found
        prior = formula.prior(self._values_of, self._part)
        check_prior(prior, formula, field=field)
        prior.setflags(write=False)
        with self._lock:
            self._priors[formula] = prior
            while len(self._priors) > self._size:
                self._priors.popitem(last=False)
        return prior

    def _part(self, term: ScoreTerm) -> Float64Array:
        with self._lock:
            found = self._parts.get(term)
            if found is not None:
                self._parts.move_to_end(term)
                return found
        part = weighted_part(term, self._values_of(term.field))
        part.setflags(write=False)
        with self._lock:
            self._parts[term] = part
            while len(self._parts) > 2 * self._size:
                self._parts.popitem(last=False)
        return part


# The grammar: [+|-] term ((+|-) term)*, term = [number *] function(field[, name=value]*), or "none".
_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?"
_TOKEN = re.compile(rf"\s*(?:(?P<number>{_NUMBER})|(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)|(?P<symbol>[-+*(),=]))")
_PARAMETERS = ("origin", "scale", "offset", "decay", "missing")


def parse_formula(text: str, *, field: str) -> ScoreFormulaSpec:
    """The formula written as text, e.g. `0.08*log1p(popularity) + 0.2*gauss(published, origin=now,
    scale=604800) - 0.01*value(price, missing=0)`; "none" (or blank) is no term (similarity
    alone). InvalidArgument naming `field` and the position on a syntax error."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise InvalidArgument(f"{field} has {len(text)} characters; the limit is {MAX_EXPRESSION_CHARS}", field=field)
    tokens = _tokens(text, field)
    if not tokens or [value for _, value in tokens] == ["none"]:
        return ScoreFormulaSpec()
    parser = _Parser(tokens, field)
    terms = [parser.term(sign=parser.sign(first=True))]
    while not parser.done():
        terms.append(parser.term(sign=parser.sign(first=False)))
    return ScoreFormulaSpec(tuple(terms))


def _tokens(text: str, field: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].isspace():
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            position += len(text[position:]) - len(text[position:].lstrip())
            near = quoted(text[position : position + 20])
            raise InvalidArgument(f"{field}: unexpected {near} at character {position}", field=field)
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: Sequence[tuple[str, str]], field: str) -> None:
        self.tokens, self.field, self.at = list(tokens), field, 0

    def done(self) -> bool:
        return self.at >= len(self.tokens)

    def fail(self, wanted: str) -> InvalidArgument:
        got = quoted(self.tokens[self.at][1]) if not self.done() else "the end"
        return InvalidArgument(f"{self.field}: expected {wanted}, got {got} (token {self.at + 1})")

    def take(self, kind: str, value: str | None = None) -> str:
        if self.done() or self.tokens[self.at][0] != kind or (value is not None and self.tokens[self.at][1] != value):
            raise self.fail(repr(value) if value is not None else f"a {kind}")
        self.at += 1
        return self.tokens[self.at - 1][1]

    def peek(self, value: str) -> bool:
        return not self.done() and self.tokens[self.at][1] == value

    def sign(self, *, first: bool) -> float:
        if self.peek("+") or self.peek("-"):
            return -1.0 if self.take("symbol") == "-" else 1.0
        if first:
            return 1.0
        raise self.fail("'+' or '-' between terms")

    def term(self, *, sign: float) -> ScoreTermSpec:
        weight = 1.0
        if not self.done() and self.tokens[self.at][0] == "number":
            weight = float(self.take("number"))
            self.take("symbol", "*")
        function = self.take("name")
        self.take("symbol", "(")
        spec = ScoreTermSpec(self.take("name"), function, weight=sign * weight)
        while self.peek(","):
            self.take("symbol", ",")
            name = self.take("name")
            if name not in _PARAMETERS:
                raise InvalidArgument(
                    f"{self.field}: unknown parameter {quoted(name)}; use {', '.join(_PARAMETERS)}", field=self.field
                )
            self.take("symbol", "=")
            spec = self._with(spec, name)
        self.take("symbol", ")")
        return spec

    def _with(self, spec: ScoreTermSpec, name: str) -> ScoreTermSpec:
        if name == "origin" and self.peek("now"):
            self.take("name", "now")
            return replace(spec, origin_now=True)
        negative = self.peek("-")
        if negative:
            self.take("symbol", "-")
        value = float(self.take("number")) * (-1.0 if negative else 1.0)
        changes: dict[str, Any] = {name: value}
        return replace(spec, **changes)


def _term_text(term: ScoreTerm) -> str:
    parameters = []
    if term.function in DECAYS:
        parameters += [f"origin={term.origin!r}", f"offset={term.offset!r}", f"decay={term.decay!r}"]
    if term.function != "log1p":
        parameters.append(f"scale={term.scale!r}")
    parameters.append(f"missing={term.missing!r}")
    return f"{abs(term.weight)!r}*{term.function}({', '.join([term.field, *parameters])})"
