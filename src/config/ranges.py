"""Valid ranges declared beside each config field, and the one walk that enforces them.

A schema field says what it accepts where it is declared (`steps: int = ranged(100_000, ge=0)`); the
walk (`check_ranges`) goes through a composed config, finds each node's dataclass with
`OmegaConf.get_type` (the YAML options extend the schemas, so the types survive composition) and
refuses the first value out of range with one line naming the key, the value and the range. It runs
when a command line is checked (cli/entry.py, before Hydra creates anything) and when a run starts
(training/run.py: sweeper-composed and resumed configs). Checks that relate fields run after the
fields' own ranges: a dataclass's `__post_init__` (the node is converted with `OmegaConf.to_object`)
and, for relations across groups, a `cross_check(node)` static method.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from config.errors import ConfigError

RANGE = "range"


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number (or of each entry of a list of numbers), or the choices of a string.

    `also`: values accepted outside the bounds for a documented meaning (nerfstudio's -1 = "all");
    `why`: what a bound or such a value means, shown in the error so the fix is clear."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    also: tuple[Any, ...] = ()
    length: int | None = None
    why: str = ""

    def allows(self, value: Any) -> bool:
        if value in self.also:
            return True
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self) -> str:
        """`>= 1`, `in [0, 1)`, `> 0`, with the accepted special values: `>= 1 or -1`."""
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else ""
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else ""
        if low and high:
            text = f"in {low}, {high}"
        elif low:
            text = f"{'>=' if low[0] == '[' else '>'} {low[1:]}"
        else:
            text = f"{'<=' if high[-1] == ']' else '<'} {high[:-1]}" if high else "a number"
        return text + "".join(f" or {v}" for v in self.also)


def ranged(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **bounds: Any):
    """A dataclass field whose valid values are declared with it (the keywords of `Range`).

    On a list field the bounds apply to each entry (`length`: how many entries it must have)."""
    choices = bounds.pop("choices", ())
    also = bounds.pop("also", ())
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={RANGE: Range(choices=tuple(choices), also=tuple(also), **bounds)})


def field_range(f: dataclasses.Field) -> Range | None:
    return f.metadata.get(RANGE)


def check_value(key: str, value: Any, rng: Range) -> None:
    """Raises ConfigError naming `key`, `value` and the range when `value` (None aside) is outside it."""
    if value is None:  # the schema's type decides whether None is allowed (Optional fields)
        return
    if rng.choices and value not in rng.choices and value not in rng.also:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(rng.choices)}"
                          f"{' (' + rng.why + ')' if rng.why else ''}; pick one, e.g. {key}={rng.choices[0]}")
    if rng.choices:
        return
    many = isinstance(value, (ListConfig, Sequence)) and not isinstance(value, str)
    entries = list(value) if many else [value]
    shown = f"[{', '.join(map(str, entries))}]" if many else str(value)
    why = f" ({rng.why})" if rng.why else ""
    if many and rng.length is not None and len(entries) != rng.length:
        raise ConfigError(f"{key}={shown} is out of range: must have {rng.length} entries, each {rng.describe()}"
                          f"{why}; set {key} to a list of {rng.length}")
    if not all(rng.allows(v) for v in entries):
        finite = "a finite number " if any(isinstance(v, float) and not math.isfinite(v) for v in entries) else ""
        must = f"each entry must be {finite}{rng.describe()}" if many else f"must be {finite}{rng.describe()}"
        raise ConfigError(f"{key}={shown} is out of range: {must}{why}; set {key} to a value in that range")


def check_fields(obj: Any, prefix: str) -> None:
    """The ranged fields of a dataclass instance (for configs built directly, outside Hydra)."""
    for f in dataclasses.fields(obj):
        rng = field_range(f)
        if rng is not None:
            check_value(f"{prefix}.{f.name}", getattr(obj, f.name), rng)


def check_options(node: Any, schema: type, prefix: str) -> None:
    """The options of an untyped node (one whose `_target_` picks the dataclass) against `schema`'s ranges."""
    for f in dataclasses.fields(schema):
        rng = field_range(f)
        if rng is not None and f.name in node:
            check_value(f"{prefix}.{f.name}", node[f.name], rng)


def check_ranges(cfg: DictConfig) -> None:
    """Raises ConfigError for the first value of `cfg` outside its field's declared range, then for the
    first failing relation between fields (dataclass `__post_init__`s, `cross_check`s)."""
    _walk(cfg, "")


def _walk(node: Any, path: str) -> None:
    if isinstance(node, ListConfig):
        for i in range(len(node)):
            if isinstance(node[i], (DictConfig, ListConfig)):
                _walk(node[i], f"{path}.{i}")
        return
    kind = OmegaConf.get_type(node)
    schema = kind if dataclasses.is_dataclass(kind) else None
    ranges = {f.name: field_range(f) for f in dataclasses.fields(schema)} if schema else {}
    for key in node:
        if (not path and key == "hydra") or OmegaConf.is_missing(node, key):
            continue
        full = f"{path}.{key}" if path else str(key)
        value = node[key]
        if ranges.get(key) is not None:
            check_value(full, value, ranges[key])
        if isinstance(value, (DictConfig, ListConfig)):
            _walk(value, full)
    if schema is None:
        return
    if hasattr(schema, "__post_init__"):
        try:
            OmegaConf.to_object(node)
        except ConfigError:
            raise
        except ValueError as e:  # the dataclass's own checks, reported like the ranges
            raise ConfigError(str(e)) from e
    if hasattr(schema, "cross_check"):
        schema.cross_check(node)
