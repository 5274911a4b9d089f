"""What an experiment file may hold: every table's keys, their types and ranges.

Each table is a ``Table`` of ``Key``s, declared beside the code that reads it (experiment.py,
adversarial.py): adding a key to the code is one more ``Key`` line there. ``Table.check``
refuses an unknown key by name with the nearest valid one, a wrong type or an out-of-range
value, as one ``ConfigError`` line; ``rows()`` gives the README's table of every key.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

from ..errors import UserError


class ConfigError(UserError, ValueError):
    """A problem in an experiment file, named by its table and key."""


_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a table"}


@dataclass
class Key:
    """One key: ``kind`` (bool, int, float, str, list, dict or a tuple of them), ``doc``,
    the default as the reading code applies it (text, for the README), and checks:
    ``min`` / ``gt`` bounds (numbers, or every number of a list), ``choices``, ``table`` (a
    nested Table), ``check`` (value -> error text or None)."""
    kind: type | tuple
    doc: str
    default: str = "required"
    min: float | None = None
    gt: float | None = None
    choices: tuple | None = None
    table: "Table | None" = None
    check: object = None

    def validate(self, value, where: str):
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        ok = any(isinstance(value, k) and not (k in (int, float) and isinstance(value, bool)) or
                 (k is float and isinstance(value, int) and not isinstance(value, bool)) for k in kinds)
        if not ok:
            want = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise ConfigError(f"{where} must be {want}, got {value!r}")
        numbers = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else (
            [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if isinstance(value, list) else [])
        for v in numbers:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{where} must be finite, got {value!r}")
            if self.min is not None and v < self.min:
                raise ConfigError(f"{where} must be >= {self.min:g}, got {value!r}")
            if self.gt is not None and v <= self.gt:
                raise ConfigError(f"{where} must be > {self.gt:g}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, self.choices))}; got {value!r}"
                              + nearest(str(value), self.choices))
        if self.table is not None and isinstance(value, dict):
            top = self.table.title.startswith("[")   # [run], [data]...: named by their own title
            self.table.check(value, self.table.title if top else where.replace("'", ""))
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(f"{where}: {problem}")


def nearest(word: str, options) -> str:
    """"; did you mean 'x'?" for the closest of ``options``, or ""."""
    near = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {near[0]!r}?" if near else ""


@dataclass
class Table:
    """The keys of one table (``title`` as the README shows it). ``open``: any further
    key is allowed (the table passes keyword arguments on, checked by their receiver)."""
    title: str
    keys: dict = field(default_factory=dict)
    open: bool = False

    def __init__(self, title: str, open: bool = False, **keys: Key):
        self.title, self.open, self.keys = title, open, dict(keys)

    def extend(self, title: str, **keys: Key) -> "Table":
        """A new table: these keys and more."""
        return Table(title, self.open, **{**self.keys, **keys})

    def check(self, table, where: str):
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table, got {table!r}")
        for k, v in table.items():
            if k not in self.keys:
                if self.open:
                    continue
                raise ConfigError(f"{where}: unknown key {k!r}{nearest(k, self.keys)} "
                                  f"(known: {', '.join(self.keys)})")
            self.keys[k].validate(v, f"{where} {k!r}")
        for k, key in self.keys.items():
            if key.default == "required" and k not in table:
                raise ConfigError(f"{where}: missing key {k!r} ({key.doc})")

    def rows(self, prefix: str = "", title: str | None = None, skip=(), seen=None):
        """(table, key, type, default, meaning) for the README, nested tables flattened
        once (``seen``: ids of tables already listed; ``skip``: keys listed elsewhere)."""
        title = title or self.title
        seen = set() if seen is None else seen
        for k, key in self.keys.items():
            if k in skip:
                continue
            kinds = key.kind if isinstance(key.kind, tuple) else (key.kind,)
            kind = " or ".join(k_.__name__ for k_ in kinds)
            rng = []
            if key.min is not None:
                rng.append(f">= {key.min:g}")
            if key.gt is not None:
                rng.append(f"> {key.gt:g}")
            if key.choices is not None:
                rng.append(" / ".join(map(str, key.choices)))
            again = key.table is not None and id(key.table) in seen
            yield (title, prefix + k, kind + (f" ({', '.join(rng)})" if rng else ""), key.default,
                   key.doc + (" (its keys as listed above)" if again else ""))
            if key.table is not None and not again:
                seen.add(id(key.table))
                yield from key.table.rows(prefix + k + ".", title, seen=seen)


def markdown(tables) -> str:
    """The README's key table for ``tables``: Tables, or (Table, keys to skip) pairs."""
    lines = ["| table | key | type (range) | default | meaning |", "|---|---|---|---|---|"]
    seen = set()
    for t in tables:
        t, skip = t if isinstance(t, tuple) else (t, ())
        for row in t.rows(skip=skip, seen=seen):
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)
