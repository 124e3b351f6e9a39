"""The kit's main job: execute every notebook in ``notebooks/`` in sorted order with papermill
(docs/design.md section "What it is"), plus the notebook conventions as checkable rules (docs/design.md section "Conventions").

``python -m salma reproduce`` (and ``make reproduce``) runs every notebook at its embedded defaults and
writes the executed copies to ``executed/``; each notebook writes its figures, tables and result JSON
to the repository's ``figures/`` through :mod:`salma.report.store`. ``--ci`` applies ``notebooks/ci_parameters.yml``
(the one CI shrink file) to every notebook that defines the parameter.

Notebooks run with the working directory set to ``notebooks/``, as when a person opens them in
JupyterLab there, so a relative path behaves the same both ways; ``salma.report.store`` finds ``figures/`` by
walking up to the repository root, so the working directory does not decide where figures land.
The kernel is ``python3``; Jupyter starts it with the interpreter that runs this module (the venv's).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import nbformat
import papermill as pm
import yaml
from tqdm.auto import tqdm

from salma.cli.parameters import check_parameters, parameter_problem
from salma.io import atomic_write_json
from salma.paths import figures_dir, foundation_dir, repo_root
from salma.report.results import write_results
from salma.report.store import COMMAND_ENV

KERNEL_NAME = "python3"
DEFAULT_TIMEOUT = 3600  # seconds per cell
CI_PARAMETERS_FILE = "ci_parameters.yml"
NOTEBOOK_NAME = re.compile(r"^\d\d_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb$")
PARAMETER_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
MAX_DEF_LINES = 10
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FORBIDDEN_BACKEND = re.compile(r"matplotlib\.use\(|switch_backend\(|^\s*%matplotlib\s+(?!inline)", re.MULTILINE)

log = logging.getLogger("salma.cli.notebooks")


# ----------------------------------------------------------------------------------------- locating
def list_notebooks(directory: str | Path) -> list[Path]:
    """Every ``*.ipynb`` directly in ``directory``, sorted by file name (the order they run in)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"notebook folder {directory} does not exist; run from the repository "
                                "or pass --notebooks")
    return sorted(p for p in directory.glob("*.ipynb") if not p.name.startswith("."))


def select(notebooks: Sequence[Path], only: Iterable[str] | None) -> list[Path]:
    """Notebooks whose name starts with one of ``only`` (e.g. "00" or "03_mba"); all when empty."""
    prefixes = [p for item in (only or []) for p in str(item).split(",") if p]
    if not prefixes:
        return list(notebooks)
    chosen = [nb for nb in notebooks if any(nb.name.startswith(p) for p in prefixes)]
    missing = [p for p in prefixes if not any(nb.name.startswith(p) for nb in notebooks)]
    if missing:
        names = ", ".join(nb.name for nb in notebooks) or "none"
        raise ValueError(f"--only {','.join(missing)} matches no notebook; available: {names}")
    return chosen


# ---------------------------------------------------------------------------------------- parameters
def _literal(node: ast.AST) -> bool:
    """True for numbers, strings, bools, None, and lists/tuples/dicts of those (negative numbers too)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float, complex, str, bool, type(None)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, (int, float))
    if isinstance(node, (ast.List, ast.Tuple)):
        return all(_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _literal(k) and _literal(v) for k, v in zip(node.keys, node.values))
    return False


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _read(path: str | Path):
    return nbformat.read(str(path), as_version=4)


def parameter_cells(nb) -> list[int]:
    """Indices of the cells tagged ``parameters``."""
    return [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]


def parse_parameters(source: str) -> tuple[dict[str, Any], list[str]]:
    """Parse a parameters cell: returns (name -> value, problems). Only ``UPPER_CASE = literal`` lines
    (and comments) are allowed."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return {}, [f"parameters cell does not parse: {exc}"]
    values: dict[str, Any] = {}
    problems: list[str] = []
    for stmt in tree.body:
        line = f"line {stmt.lineno}"
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            problems.append(f"parameters cell {line}: only `NAME = literal` assignments are allowed")
            continue
        name = stmt.targets[0].id
        if not PARAMETER_NAME.match(name):
            problems.append(f"parameters cell {line}: {name!r} is not UPPER_CASE")
        if not _literal(stmt.value):
            problems.append(f"parameters cell {line}: {name} is not a literal (number, string, bool, None, "
                            "or a list/tuple/dict of those)")
            continue
        values[name] = ast.literal_eval(stmt.value)
    return values, problems


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The defaults in the notebook's ``parameters`` cell ({} when it has none)."""
    nb = _read(path)
    cells = parameter_cells(nb)
    return parse_parameters(_source(nb.cells[cells[0]]))[0] if cells else {}


def load_ci_parameters(directory: str | Path) -> dict[str, Any]:
    """The mapping in ``<directory>/ci_parameters.yml`` ({} when the file is empty)."""

    path = Path(directory) / CI_PARAMETERS_FILE
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TypeError(f"{path} must hold a mapping PARAMETER: value, not {type(data).__name__}")
    return data


def parameters_for(path: str | Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``overrides`` that the notebook's parameters cell defines."""
    defined = notebook_parameters(path)
    return {k: v for k, v in overrides.items() if k in defined}


# ------------------------------------------------------------------------------------------- running
def run_notebook(path: str | Path, out_dir: str | Path, parameters: dict[str, Any] | None = None,
                 timeout: int = DEFAULT_TIMEOUT, cwd: str | Path | None = None,
                 log_output: bool = True) -> Path:
    """Execute one notebook with papermill (kernel ``python3``, ``timeout`` seconds per cell) and write
    the executed copy to ``out_dir/<name>``. ``cwd`` defaults to the notebook's folder.
    Raises papermill's ``PapermillExecutionError`` (holding the failing cell's error) on failure."""

    path = Path(path).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    pm.execute_notebook(str(path), str(out), parameters=dict(parameters or {}), kernel_name=KERNEL_NAME,
                        execution_timeout=timeout, log_output=log_output, progress_bar=False,
                        cwd=str(cwd or path.parent))
    return out


def run_all(notebooks_dir: str | Path, out_dir: str | Path, *, ci: bool = False,
            only: Iterable[str] | None = None, parameters: dict[str, Any] | None = None,
            timeout: int = DEFAULT_TIMEOUT, log_output: bool = True) -> list[dict[str, Any]]:
    """Run the selected notebooks in order, stopping at the first failure (later notebooks may read what
    earlier ones wrote). Each notebook receives the keys of (ci_parameters.yml if ``ci``) updated by
    ``parameters`` that its parameters cell defines. Returns one record per notebook run (name,
    parameters, seconds, output, ok, error); also written to ``out_dir/timings.json``."""

    notebooks_dir = Path(notebooks_dir)
    chosen = select(list_notebooks(notebooks_dir), only)
    ci_values = load_ci_parameters(notebooks_dir) if ci else {}
    check_parameters(ci_values, str(notebooks_dir / CI_PARAMETERS_FILE))
    check_parameters(parameters or {}, "-p")
    overrides = {**ci_values, **(parameters or {})}
    unused = set(parameters or {}) - {k for nb in chosen for k in notebook_parameters(nb)}
    if unused:
        raise ValueError(f"parameter(s) {', '.join(sorted(unused))} are defined by none of the selected "
                         f"notebooks ({', '.join(nb.name for nb in chosen)})")
    records: list[dict[str, Any]] = []
    # With cell outputs echoed to the console a redrawn bar would interleave with them; the per-notebook
    # lines below carry the progress either way.
    bar = tqdm(chosen, desc="notebooks", unit="nb", file=sys.stdout, disable=log_output or not chosen)
    for i, nb in enumerate(bar, 1):
        params = parameters_for(nb, overrides)
        bar.set_postfix_str(nb.name)
        tqdm.write(f"[{i}/{len(chosen)}] {nb.name} {params or ''}".rstrip(), file=sys.stdout)
        t0 = time.perf_counter()
        record = {"notebook": nb.name, "parameters": params, "output": str(Path(out_dir) / nb.name)}
        # the kernel inherits the environment: save_json records this command in every result's provenance
        os.environ[COMMAND_ENV] = reproduce_command(nb, params, ci)
        try:
            run_notebook(nb, out_dir, params, timeout=timeout, log_output=log_output)
            record.update(ok=True, error=None)
        except Exception as exc:  # noqa: BLE001 -- any failure is reported with the notebook's name
            record.update(ok=False, error=ANSI.sub("", f"{type(exc).__name__}: {exc}"))
        record["seconds"] = round(time.perf_counter() - t0, 2)
        records.append(record)
        status = "done" if record["ok"] else "FAILED"
        tqdm.write(f"[{i}/{len(chosen)}] {nb.name} {status} in {record['seconds']:.1f} s", file=sys.stdout)
        if not record["ok"]:
            break
    os.environ.pop(COMMAND_ENV, None)
    bar.close()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    merge_timings(Path(out_dir) / "timings.json", records)
    return records


def merge_timings(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write this run's records into ``path`` (timings.json), keeping the records of notebooks it did not run
    (``reproduce --only 05`` must not erase the timings of the others), sorted by notebook; atomically."""
    kept: list[dict[str, Any]] = []
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); delete it (it only holds earlier runs' "
                             "timings) and rerun") from exc
        if not isinstance(previous, list) or not all(isinstance(r, dict) and "notebook" in r for r in previous):
            raise ValueError(f"{path} does not hold a list of notebook records; delete it and rerun")
        ran = {r["notebook"] for r in records}
        kept = [r for r in previous if r["notebook"] not in ran]
    merged = sorted(kept + records, key=lambda r: r["notebook"])
    return atomic_write_json(path, merged, indent=2)


def reproduce_command(notebook: Path, parameters: dict[str, Any], ci: bool) -> str:
    """The command that re-runs one notebook as the runner ran it (recorded in its results' provenance)."""
    args = [f"--only {notebook.name[:2]}"] + (["--ci"] if ci else [])
    args += [f"-p {k} {json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(parameters.items())]
    return "python -m salma reproduce " + " ".join(args)


# -------------------------------------------------------------------------------------------- lint
def _code_for_ast(source: str) -> str:
    # IPython magics and shell escapes are not Python; blank them so line numbers stay right.
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def defined_names(nb) -> dict[str, int]:
    """Functions and classes a notebook defines: name -> length in lines (def/class line to last)."""
    out: dict[str, int] = {}
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = ast.parse(_code_for_ast(_source(cell)))
        except SyntaxError:  # a cell that does not parse defines nothing we can measure; executing it fails loudly
            tree = ast.Module(body=[], type_ignores=[])
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out[node.name] = max(out.get(node.name, 0), node.end_lineno - node.lineno + 1)
    return out


def lint_notebook(path: str | Path) -> list[str]:
    """Problems with one notebook against the conventions of docs/design.md section "Conventions" ([] when it is clean)."""
    path = Path(path)
    problems: list[str] = []
    if not NOTEBOOK_NAME.match(path.name):
        problems.append(f"file name {path.name!r} is not NN_snake_case.ipynb")
    try:
        nb = _read(path)
    except Exception as exc:  # noqa: BLE001
        return problems + [f"not a readable notebook: {exc}"]
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel != KERNEL_NAME:
        problems.append(f"kernelspec name is {kernel!r}, expected {KERNEL_NAME!r}")
    first = nb.cells[0] if nb.cells else {}
    if first.get("cell_type") != "markdown" or not _source(first).lstrip().startswith("# "):
        problems.append("the first cell must be markdown opening with a '# ' title")
    tagged = parameter_cells(nb)
    if len(tagged) != 1:
        problems.append(f"{len(tagged)} cells are tagged 'parameters'; exactly one is required")
    for i in tagged:
        if nb.cells[i].get("cell_type") != "code":
            problems.append(f"cell {i} is tagged 'parameters' but is not a code cell")
        else:
            values, bad = parse_parameters(_source(nb.cells[i]))
            problems += bad + [p for name, value in values.items() if (p := parameter_problem(name, value))]
            if not values and not bad:
                problems.append("the parameters cell defines no parameter")
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has stored outputs (strip them)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has an execution count (strip it)")
        source = _source(cell)
        try:
            ast.parse(_code_for_ast(source))
        except SyntaxError as exc:
            problems.append(f"cell {i} does not parse: {exc}")
        if FORBIDDEN_BACKEND.search(source):
            problems.append(f"cell {i} forces a matplotlib backend (tests set MPLBACKEND from outside)")
    for name, lines in defined_names(nb).items():
        if lines > MAX_DEF_LINES:
            problems.append(f"{name} is {lines} lines long; move it into the salma package "
                            f"(notebooks hold no definition longer than {MAX_DEF_LINES} lines)")
    if "papermill" in nb.metadata:
        problems.append("notebook metadata holds papermill execution records (commit the source notebook)")
    return problems


def lint_collection(notebooks: Sequence[Path], ci_parameters: dict[str, Any]) -> list[str]:
    """Problems across notebooks: a helper defined in two notebooks; a CI parameter no notebook defines."""
    problems: list[str] = []
    owners: dict[str, list[str]] = {}
    defined: set[str] = set()
    for path in notebooks:
        nb = _read(path)
        for name in defined_names(nb):
            owners.setdefault(name, []).append(path.name)
        defined |= set(notebook_parameters(path))
    for name, where in sorted(owners.items()):
        if len(where) > 1:
            problems.append(f"{name} is defined in {', '.join(where)}; move it into the salma package")
    for key in sorted(set(ci_parameters) - defined):
        problems.append(f"{CI_PARAMETERS_FILE} sets {key}, which no notebook's parameters cell defines")
    return problems


# -------------------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ci", action="store_true",
                        help=f"apply notebooks/{CI_PARAMETERS_FILE} (the CI sizes) to every notebook")
    parser.add_argument("--only", action="append", metavar="NN",
                        help="run only notebooks whose name starts with NN (repeat or comma-separate)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                        help="set a parameter (VALUE is read as YAML: 3, true, tiny, [0, 1])")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT,
                        help=f"execution timeout per cell in seconds (default {DEFAULT_TIMEOUT})")
    parser.add_argument("--out", type=Path, default=None, help="folder for executed notebooks (default executed/)")
    parser.add_argument("--notebooks", type=Path, default=None, help="notebook folder (default notebooks/)")
    parser.add_argument("--quiet", action="store_true", help="do not echo cell outputs to the console")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = repo_root()
    nb_dir = args.notebooks or root / "notebooks"
    out_dir = (args.out or root / "executed").resolve()
    params = {name: yaml.safe_load(value) for name, value in (args.parameter or [])}
    t0 = time.perf_counter()
    records = run_all(nb_dir, out_dir, ci=args.ci, only=args.only, parameters=params,
                      timeout=args.timeout, log_output=not args.quiet)
    total = time.perf_counter() - t0
    failed = [r for r in records if not r["ok"]]
    print(f"{len(records) - len(failed)}/{len(records)} notebooks ran in {total:.1f} s; executed copies in "
          f"{out_dir}, figures in {_figures_hint()}")
    for r in failed:
        print(f"FAILED {r['notebook']}: {r['error']}", file=sys.stderr)
    if records and not failed and is_main_job(args):
        # the main job ends by regenerating RESULTS.md from the result JSON (CI-sized runs are not results)
        print(f"wrote {write_results(figures_dir(), repo_root() / 'RESULTS.md', foundation_dir('small') / 'manifest.json')}")
    return 1 if failed or not records else 0


def is_main_job(args: argparse.Namespace) -> bool:
    """Every notebook at its defaults, not the CI sizes: the one run whose results RESULTS.md records. A
    ``--only`` or ``-p`` run leaves RESULTS.md as it is (its figures folder may hold one notebook's JSON)."""
    return not (args.ci or args.only or args.parameter or args.notebooks)


def _figures_hint() -> str:
    return str(figures_dir())


