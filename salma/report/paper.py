"""The SALMA paper's published numbers as data (docs/method.md section 6), for the notebooks' "paper" columns.

Tables 1-4 of the SALMA paper (Sa2VA-1B baseline -> SALMA). Every number carries the table it comes from,
the benchmark and split it was measured on, the metric and its unit, so that a notebook never puts a
paper number beside one of ours without saying that the benchmark differs: the paper measures on
Ref-DAVIS17 / RefCOCOg / MeViS, the kit on SynRef (its synthetic benchmark). Where the earlier (Chinese)
draft of the paper disagrees with the final paper, the final paper's number is the value and the draft's
is kept in ``draft``.

The kit's variant names (``salma.train.recipes.VARIANTS``) map to the paper's rows through
``TABLE2_ROWS`` and ``TABLE3_ROWS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PaperNumber:
    """One published number.

    table: "Table 1".."Table 4"; row: the paper's row label; benchmark: dataset and split
    (e.g. "RefCOCOg test"); metric: "cIoU" / "J&F"; value: in percent; n: the number of expressions
    when the paper gives it; draft: the earlier draft's value where it differs, else None.
    """

    table: str
    row: str
    benchmark: str
    metric: str
    value: float
    n: int | None = None
    draft: float | None = None

    @property
    def label(self) -> str:
        """A column label such as "paper: RefCOCOg test cIoU (%)"."""
        return f"paper: {self.benchmark} {self.metric} (%)"


# Table 2: the ablation, DAVIS J&F and RefCOCOg *test* cIoU (the draft's RefCOCOg column was *val*, with
# baseline 77.76, and its +MBA / +MBA+TMC rows were "TODO").
TABLE2: tuple[PaperNumber, ...] = (
    PaperNumber("Table 2", "baseline (Sa2VA-1B)", "Ref-DAVIS17 val", "J&F", 68.52),
    PaperNumber("Table 2", "baseline (Sa2VA-1B)", "RefCOCOg test", "cIoU", 77.45),
    PaperNumber("Table 2", "+MBA", "Ref-DAVIS17 val", "J&F", 69.83),
    PaperNumber("Table 2", "+MBA", "RefCOCOg test", "cIoU", 78.21),
    PaperNumber("Table 2", "+MBA+TMC", "Ref-DAVIS17 val", "J&F", 71.04),
    PaperNumber("Table 2", "+MBA+TMC", "RefCOCOg test", "cIoU", 78.28),
    PaperNumber("Table 2", "+MBA+TMC+Bound", "Ref-DAVIS17 val", "J&F", 71.87),
    PaperNumber("Table 2", "+MBA+TMC+Bound", "RefCOCOg test", "cIoU", 78.42),
)

# Table 3: Residual FiLM on top of the gate (the draft had FiLM *raising* DAVIS to 73.25 and MeViS at 50.64).
TABLE3: tuple[PaperNumber, ...] = (
    PaperNumber("Table 3", "full (SALMA)", "Ref-DAVIS17 val", "J&F", 71.87),
    PaperNumber("Table 3", "full (SALMA)", "MeViS valu", "J&F", 53.37),
    PaperNumber("Table 3", "with FiLM", "Ref-DAVIS17 val", "J&F", 68.13, draft=73.25),
    PaperNumber("Table 3", "with FiLM", "MeViS valu", "J&F", 47.46, draft=50.64),
)

# Table 4: RefCOCOg val cIoU by GT area / image area (cumulative bins), Sa2VA-1B -> SALMA.
TABLE4: tuple[PaperNumber, ...] = (
    PaperNumber("Table 4", "baseline (Sa2VA-1B)", "RefCOCOg val <1%", "cIoU", 37.1, n=35),
    PaperNumber("Table 4", "SALMA", "RefCOCOg val <1%", "cIoU", 33.2, n=35),
    PaperNumber("Table 4", "baseline (Sa2VA-1B)", "RefCOCOg val <2%", "cIoU", 47.7, n=151),
    PaperNumber("Table 4", "SALMA", "RefCOCOg val <2%", "cIoU", 48.9, n=151),
    PaperNumber("Table 4", "baseline (Sa2VA-1B)", "RefCOCOg val <5%", "cIoU", 68.0, n=1559),
    PaperNumber("Table 4", "SALMA", "RefCOCOg val <5%", "cIoU", 70.2, n=1559),
    PaperNumber("Table 4", "baseline (Sa2VA-1B)", "RefCOCOg val all", "cIoU", 77.8, n=4896),
    PaperNumber("Table 4", "SALMA", "RefCOCOg val all", "cIoU", 78.0, n=4896),
)

# Table 1 (image and video benchmarks), Sa2VA-1B -> SALMA, for reference (the kit cannot regenerate it
# without the real checkpoints and datasets).
TABLE1: tuple[PaperNumber, ...] = tuple(
    PaperNumber("Table 1", row, bench, metric, value)
    for bench, metric, base, ours in (
        ("RefCOCO val", "cIoU", 79.6, 80.4), ("RefCOCO testA", "cIoU", 82.7, 83.2),
        ("RefCOCO testB", "cIoU", 76.5, 77.7), ("RefCOCO+ val", "cIoU", 73.6, 74.8),
        ("RefCOCO+ testA", "cIoU", 79.0, 80.0), ("RefCOCO+ testB", "cIoU", 66.6, 68.9),
        ("RefCOCOg val", "cIoU", 77.8, 78.0), ("RefCOCOg test", "cIoU", 77.5, 78.4),
        ("Ref-DAVIS17", "J&F", 68.5, 71.9), ("Ref-YouTube-VOS", "J&F", 65.3, 67.0), ("MeViS", "J&F", 41.7, 46.0),
    )
    for row, value in (("baseline (Sa2VA-1B)", base), ("SALMA", ours))
)

# kit variant -> the paper's row label.
TABLE2_ROWS: dict[str, str] = {"baseline": "baseline (Sa2VA-1B)", "mba": "+MBA", "mba_tmc": "+MBA+TMC",
                               "salma": "+MBA+TMC+Bound"}
TABLE3_ROWS: dict[str, str] = {"salma": "full (SALMA)", "film": "with FiLM"}
TABLE4_ROWS: dict[str, str] = {"baseline": "baseline (Sa2VA-1B)", "salma": "SALMA"}
AREA_BIN_NAMES: tuple[str, ...] = ("<1%", "<2%", "<5%", "all")

ALL_TABLES: dict[str, tuple[PaperNumber, ...]] = {"Table 1": TABLE1, "Table 2": TABLE2, "Table 3": TABLE3,
                                                  "Table 4": TABLE4}


def numbers(table: str, row: str | None = None) -> list[PaperNumber]:
    """The paper's numbers of one table (optionally one row); raises ValueError naming the accepted names."""
    if table not in ALL_TABLES:
        raise ValueError(f"table={table!r}; accepted values: {', '.join(ALL_TABLES)}")
    found = [p for p in ALL_TABLES[table] if row is None or p.row == row]
    if row is not None and not found:
        rows = sorted({p.row for p in ALL_TABLES[table]})
        raise ValueError(f"{table} has no row {row!r}; its rows: {', '.join(rows)}")
    return found


def paper_columns(table: str, variant: str, benchmark: str | None = None) -> dict[str, float]:
    """{"paper: <benchmark> <metric> (%)": value} for a kit variant's row of Table 2 or 3 ({} if it has none);
    with ``benchmark`` (e.g. "MeViS valu") only that column."""
    rows = {"Table 2": TABLE2_ROWS, "Table 3": TABLE3_ROWS}.get(table)
    if rows is None:
        raise ValueError(f"paper_columns serves Table 2 and Table 3; got {table!r}")
    names = sorted({p.benchmark for p in numbers(table)})
    if benchmark is not None and benchmark not in names:
        raise ValueError(f"{table} has no column {benchmark!r}; its columns: {', '.join(names)}")
    if variant not in rows:
        return {}
    return {p.label: p.value for p in numbers(table, rows[variant]) if benchmark in (None, p.benchmark)}


def table4_value(model: str, area_bin: str) -> PaperNumber:
    """Table 4's number for ``model`` ("baseline" or "salma") and an area bin ("<1%", "<2%", "<5%", "all")."""
    if model not in TABLE4_ROWS:
        raise ValueError(f"model={model!r}; accepted values: {', '.join(TABLE4_ROWS)}")
    if area_bin not in AREA_BIN_NAMES:
        raise ValueError(f"area_bin={area_bin!r}; accepted values: {', '.join(AREA_BIN_NAMES)}")
    bench = f"RefCOCOg val {area_bin}"
    return next(p for p in TABLE4 if p.row == TABLE4_ROWS[model] and p.benchmark == bench)


def column(table: str, benchmark: str, rows: Mapping[str, str] | None = None) -> dict[str, float]:
    """{row label: value} of one benchmark column of a table, e.g. column("Table 2", "RefCOCOg test").
    With ``rows`` (kit variant -> paper row, e.g. TABLE2_ROWS) the keys are the kit's variant names."""
    found = {p.row: p.value for p in numbers(table) if p.benchmark == benchmark}
    if not found:
        names = sorted({p.benchmark for p in numbers(table)})
        raise ValueError(f"{table} has no column {benchmark!r}; its columns: {', '.join(names)}")
    if rows is None:
        return found
    return {v: found[r] for v, r in rows.items() if r in found}
