"""Markdown for RESULTS.md: values formatted as stored or rounded (``fmt``), tables drawn from lists of row
dicts whatever their columns (``table``, ``kv_table``, ``records``, ``pivot``, ``join``), bullet lists, and
``Body``, the text of one section as it is built.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# the key under which save_json records where a result came from (Body leaves it out of "Other fields")
PROVENANCE_KEY = "provenance"


MISSING = "-"  # the cell of an absent or null value


# ============================================================================================ formatting
def fmt(value: Any) -> str:
    """One value as text: floats with up to 3 decimals as stored, else rounded to 3 decimals without trailing
    zeros (3 significant digits below 0.1, so small values keep their digits); ints as stored, booleans as
    true/false, None and non-finite floats as "-", lists joined by ", ", a median/IQR record (``spread``) in one
    phrase, other dicts as "key: value" pairs."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return MISSING
        text = repr(value)
        if "e" not in text and "E" not in text and len(text.partition(".")[2]) <= 3:
            return text
        if abs(value) < 0.1:
            return f"{value:.3g}"
        head, _, tail = f"{value:.3f}".partition(".")
        return f"{head}.{tail.rstrip('0') or '0'}"
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if _is_spread(value):
            return _fmt_spread(value)
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (list, tuple, Mapping)) for v in value):
            return "[" + "; ".join(fmt(v) for v in value) + "]"
        return ", ".join(fmt(v) for v in value)
    return str(value)


def _is_spread(value: Any) -> bool:
    # salma's ``spread``: median, q25, q75, min, max, n of a sample
    return isinstance(value, Mapping) and {"median", "q25", "q75", "n"} <= set(value)


def _fmt_spread(s: Mapping[str, Any]) -> str:
    text = f"median {fmt(s.get('median'))} (IQR {fmt(s.get('q25'))} to {fmt(s.get('q75'))}"
    if "min" in s and "max" in s:
        text += f", min {fmt(s.get('min'))}, max {fmt(s.get('max'))}"
    return text + f", n={fmt(s.get('n'))})"


def _cell(value: Any) -> str:
    return fmt(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _inline(value: Any) -> str:
    return fmt(value).replace("\r", " ").replace("\n", " ")


def _matches(column: str, pattern: str) -> bool:
    # "name" matches itself; "prefix*" every column that starts with prefix
    return column.startswith(pattern[:-1]) if pattern.endswith("*") else column == pattern


def _order(columns: Sequence[str], first: Sequence[str] = (), last: Sequence[str] = ("paper*",)) -> list[str]:
    """``columns`` with those matching ``first`` (names, or prefixes ending in "*") at the front and those
    matching ``last`` at the back, each in the order of its patterns; the rest keep their order."""
    head = list(dict.fromkeys(c for p in first for c in columns if _matches(c, p)))
    tail = list(dict.fromkeys(c for p in last for c in columns if c not in head and _matches(c, p)))
    return head + [c for c in columns if c not in head and c not in tail] + tail


def table(rows: Iterable[Mapping[str, Any]], first: Sequence[str] = (), hide: Sequence[str] = (),
          last: Sequence[str] = ("paper*",)) -> str:
    """A Markdown pipe table of row dicts: the union of their keys as columns (``first`` in front, ``last`` at
    the back, as in ``_order``; by default the "paper..." columns; ``hide`` left out), "-" where a row lacks a
    column. "" for no rows."""
    rows = [r for r in rows if isinstance(r, Mapping)]
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for r in rows for k in r if k not in hide))
    if not columns:
        return ""
    columns = _order(columns, first, last)
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v and not _is_spread(v):
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def kv_table(items: Mapping[str, Any] | Iterable[tuple[str, Any]], header: tuple[str, str] = ("field", "value")) -> str:
    """A two-column table of (name, value); nested dicts become dotted names. "" when empty."""
    pairs = _flatten(items) if isinstance(items, Mapping) else [p for p in items]
    if not pairs:
        return ""
    return table([{header[0]: k, header[1]: v} for k, v in pairs], last=())


def records(mapping: Any, key: str, value: str = "value") -> list[dict[str, Any]]:
    """{name: {column: value}} as row dicts with the name in column ``key`` ({name: value} gives a ``value``
    column); [] for anything else."""
    if not isinstance(mapping, Mapping):
        return []
    return [{key: k, **v} if isinstance(v, Mapping) else {key: k, value: v} for k, v in mapping.items()]


def pivot(rows: Any, index: Sequence[str], column: str, value: str) -> list[dict[str, Any]]:
    """Row dicts regrouped: one row per distinct ``index`` values, one column per distinct ``column`` value
    holding ``value`` (no arithmetic: each cell is one stored value)."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in rows if isinstance(rows, list) else []:
        if isinstance(r, Mapping) and column in r:
            row = out.setdefault(tuple(fmt(r.get(k)) for k in index), {k: r.get(k) for k in index})
            row[fmt(r[column])] = r.get(value)
    return list(out.values())


def join(tables: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """Row lists side by side, matched on ``key``: columns "<label>: <column>"."""
    out: dict[str, dict[str, Any]] = {}
    for label, rows in tables.items():
        for r in rows if isinstance(rows, list) else []:
            if isinstance(r, Mapping) and key in r:
                row = out.setdefault(fmt(r[key]), {key: r[key]})
                row.update({f"{label}: {c}": v for c, v in r.items() if c != key})
    return list(out.values())


def bullets(items: Any) -> str:
    """A list of sentences as Markdown bullets; a {name: sentence} dict as "name: sentence" bullets."""
    if isinstance(items, str):
        items = [items]
    if isinstance(items, Mapping):
        return "\n".join(f"- `{_inline(k)}`: {_inline(v)}" for k, v in items.items())
    if isinstance(items, list):
        return "\n".join(f"- {_inline(v)}" for v in items)
    return ""


# ============================================================================================ a section
class Body:
    """The blocks of one section's body and the top-level fields it has shown (the rest go to "Other fields")."""

    def __init__(self, data: Mapping[str, Any]):
        self.data, self.used, self.blocks = data, {PROVENANCE_KEY}, []

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def add(self, title: str | None, block: str, note: str | None = None) -> None:
        if not block:
            return
        parts = [f"**{title}**" + (f" ({note})" if note else "")] if title else []
        self.blocks.append("\n\n".join(parts + [block]))

    def fields(self, keys: Sequence[str], title: str | None = None) -> None:
        """The given top-level fields (those present) as a field/value table."""
        self.add(title, kv_table([(k, self.get(k)) for k in keys if k in self.data]))

    def verdicts(self, key: str, title: str = "Verdicts (as the notebook computed them)") -> None:
        self.add(title, bullets(self.get(key)))

    def rest(self) -> None:
        """Every top-level field not shown yet, generically: scalars and small dicts in one table, row lists as
        tables, sentence lists as bullets."""
        other = [(k, v) for k, v in self.data.items() if k not in self.used]
        scalars = []
        for k, v in other:
            if isinstance(v, list) and v and all(isinstance(r, Mapping) for r in v):
                self.add(f"`{k}`", table(v))
            elif isinstance(v, list) and v and all(isinstance(r, str) for r in v):
                self.add(f"`{k}`", bullets(v))
            elif isinstance(v, Mapping) and v and all(isinstance(r, Mapping) and not _is_spread(r)
                                                      for r in v.values()):
                self.add(f"`{k}`", table(records(v, "name")))
            elif isinstance(v, Mapping) and v:
                scalars += _flatten(v, k + ".")
            else:
                scalars.append((k, v))
        self.add("Other fields", kv_table(scalars))
