"""The kit's docs and the citations of them.

Code, notebooks and tests cite the documentation in ``docs/`` by section: ``docs/method.md section 3.5, item 4``,
``docs/method.md sections 6-7``, ``docs/design.md section "Foundation, then fine-tuning"``. These tests check that
every such citation names a file that exists and a section (a heading's number or title) and list item that exist
in it, and that nothing in the repository cites a file outside it.

Citation syntax accepted (words may be separated by spaces or by a line break, optionally followed by a comment
marker ``#``, so a citation may wrap inside a comment or a docstring; in notebooks the text of the cells' source
strings is read, so JSON's ``\\n`` escapes between words are line breaks)::

    docs/<name>.md                                  the file must exist
    docs/<name>.md section[s] <refs>[, item[s] <n>] the word "section" may be left out
    <refs>  = 3.5 | 6-7 | 2, 3.1 and 8 | "Heading title" | "Title A" and "Title B"
    <n>     = 4 | 2 and 4 | 1-3
    ... section 5 (a note) and section 9           a second reference to the same file

A number must be a heading's number (``## 3. Title``, ``### 3.5 Title``); a quoted title must equal a heading's
title, case-insensitively, ignoring its number (and a trailing parenthesis on the heading); an item must be a
numbered list item (``4.`` or ``4)``) inside the cited section.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
THIS = Path(__file__).resolve()

# ---------------------------------------------------------------------------------------------- the citation grammar
# between two words: spaces, or a line break followed by an optional comment marker
SEP = r"(?:[ \t]+|[ \t]*\r?\n[ \t]*(?:#+[ \t]*)?)+"
SEP0 = rf"(?:{SEP})?"
NUM = r"\d+(?:\.\d+)*"
JOIN = rf"(?:{SEP0}(?:-|–|to){SEP0}|{SEP0},{SEP0}(?:and{SEP})?|{SEP}and{SEP})"
NUMS = rf"{NUM}(?:{JOIN}{NUM})*"
QUOTED = r'["“][^"”]{1,200}?["”]'
TITLES = rf"{QUOTED}(?:{JOIN}{QUOTED})*"
ITEMS = rf",?{SEP}items?{SEP}\d+(?:{JOIN}\d+)*"
REF = rf"(?P<ref>{NUMS}|{TITLES})(?P<items>{ITEMS})?"
KEYWORD = rf"(?:(?:sections?|§){SEP})"
CITATION = re.compile(rf"(?<![\w/.-])(?:\.\./)*docs/(?P<name>[\w-]+(?:\.[\w-]+)*?)\.md\b(?:,?{SEP}{KEYWORD}?{REF})?")
# "... section 5 (refer format) and section 9": a further reference to the same file
CONTINUATION = re.compile(rf"(?:{SEP0}\([^()]{{0,120}}\))?,?{SEP}(?:and|or){SEP}(?:in{SEP})?(?P<kw>{KEYWORD}){REF}")

# citations of files outside the repository: the old reference sheets, and absolute or ../ paths into a shared/ folder
# (the names are assembled from parts so that this file does not itself mention them)
_REF, _DES, _SHARED = "REFER" + "ENCE", "DES" + "IGN", "sha" + "red"
OUTSIDE = re.compile(rf"{_REF}\.md|{_DES}\.md|\b{_REF}(?:\s+sections?)?\s+\d"
                     rf"|(?:(?<![\w.])\.\./|(?<![\w.~-])/(?:[\w.-]+/)*){_SHARED}(?:/|\b)")


@dataclass(frozen=True)
class Citation:
    source: str  # file (relative to the repository) and line: "salma/mba.py:80"
    text: str  # the citation as written, on one line
    doc: str  # "method" for docs/method.md
    numbers: tuple[str, ...] = ()
    titles: tuple[str, ...] = ()
    items: tuple[int, ...] = ()


def _one_line(text: str) -> str:
    return " ".join(re.sub(SEP, " ", text).split())


def _expand(a: str, b: str) -> list[str]:
    """The section numbers of the range a-b: every integer between for 6-7, the last component for 3.1-3.3."""
    pa, pb = a.split("."), b.split(".")
    if len(pa) == len(pb) and pa[:-1] == pb[:-1] and int(pa[-1]) <= int(pb[-1]):
        return [".".join(pa[:-1] + [str(k)]) for k in range(int(pa[-1]), int(pb[-1]) + 1)]
    return [a, b]


def _numbers(text: str) -> list[str]:
    """Section numbers of '2, 3.1 and 8' or '6-7' or '2 to 4', ranges expanded."""
    out: list[str] = []
    matches = list(re.finditer(NUM, text))
    for i, m in enumerate(matches):
        between = text[matches[i - 1].end():m.start()] if i else ""
        if i and re.search(r"-|–|\bto\b", between):
            out.extend(_expand(out.pop(), m.group()))
        else:
            out.append(m.group())
    return out


def _reference(ref: str, items: str | None) -> dict:
    """Citation fields (numbers or titles, and items) of a matched reference."""
    item_numbers = _numbers(re.sub(r"^.*?items?", "", items, flags=re.DOTALL)) if items else []
    fields: dict = {"items": tuple(int(n) for n in item_numbers)}
    if ref[0] in "\"“":
        fields["titles"] = tuple(_one_line(t) for t in re.findall(r'["“]([^"”]+)["”]', ref))
    else:
        fields["numbers"] = tuple(_numbers(ref))
    return fields


def parse_citations(text: str, line_of=None, source: str = "<text>") -> list[Citation]:
    """Every citation of docs/ in ``text``. ``line_of(offset)``: the line to report (default: count newlines)."""
    line_of = line_of or (lambda offset: text.count("\n", 0, offset) + 1)
    found = []
    for m in CITATION.finditer(text):
        name, where = m.group("name"), f"{source}:{line_of(m.start())}"
        if m.group("ref") is None:
            found.append(Citation(where, m.group(), name))
            continue
        found.append(Citation(where, _one_line(m.group()), name, **_reference(m.group("ref"), m.group("items"))))
        end = m.end()
        while cont := CONTINUATION.match(text, end):
            found.append(Citation(where, _one_line(f"docs/{name}.md {text[cont.start('kw'):cont.end()]}"), name,
                                  **_reference(cont.group("ref"), cont.group("items"))))
            end = cont.end()
    return found


# ---------------------------------------------------------------------------------------------- reading the sources
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_SOURCE_LINE = re.compile(rf"^\s*(?:\"source\"\s*:\s*)?(?P<s>{_JSON_STRING})\s*,?\s*$")
_KEY = re.compile(rf"^\s*{_JSON_STRING}\s*:")
_BREAK = "\n\x00\n"  # between cells and around JSON structure: no citation spans it


def notebook_text(raw: str) -> tuple[str, Callable[[int], int]]:
    """The text of a notebook's source strings (each alone on its line in nbformat's JSON), joined, and a function
    from an offset in that text to the line of the raw .ipynb file it came from."""
    pieces, starts, lines, offset = [], [], [], 0
    for number, line in enumerate(raw.splitlines(), start=1):
        piece = _BREAK
        if _KEY.match(line) and not line.lstrip().startswith('"source"'):
            pass  # "key": "value" lines other than a one-string source are structure, not text
        elif m := _SOURCE_LINE.match(line):
            try:
                piece = json.loads(m.group("s"))
            except json.JSONDecodeError:
                pass
        pieces.append(piece)
        starts.append(offset)
        lines.append(number)
        offset += len(piece)
    return "".join(pieces), lambda pos: lines[max(bisect.bisect_right(starts, pos) - 1, 0)]


def cited_sources() -> list[Path]:
    """The files whose citations of docs/ are checked."""
    files = sorted((REPO / "salma").rglob("*.py")) + sorted((REPO / "tests").rglob("*.py"))
    files += sorted(p for p in (REPO / "notebooks").rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts)
    files += sorted(DOCS.glob("*.md")) + [REPO / "README.md"]
    return [p for p in files if p.is_file() and p.resolve() != THIS and "__pycache__" not in p.parts]


def citations_in(path: Path) -> list[Citation]:
    raw = path.read_text(encoding="utf-8", errors="replace")
    rel = path.relative_to(REPO).as_posix()
    if path.suffix == ".ipynb":
        text, line_of = notebook_text(raw)
        return parse_citations(text, line_of, rel)
    return parse_citations(raw, source=rel)


# ---------------------------------------------------------------------------------------------- reading the docs
@dataclass(frozen=True)
class Heading:
    level: int
    number: str | None
    title: str
    body: tuple[str, ...]  # the lines up to the next heading of the same or a higher level


_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_NUMBERED = re.compile(r"^(\d+(?:\.\d+)*)\.?[ \t]+(.*)$")


def headings(markdown: str) -> list[Heading]:
    """The headings of a Markdown text (not those inside fenced code blocks), with their numbers and bodies."""
    lines, found, fenced = markdown.splitlines(), [], False
    for i, line in enumerate(lines):
        if re.match(r"^\s*(```|~~~)", line):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            text = m.group(2)
            numbered = _NUMBERED.match(text)
            found.append((i, len(m.group(1)), numbered.group(1) if numbered else None,
                          numbered.group(2) if numbered else text))
    out = []
    for k, (i, level, number, title) in enumerate(found):
        end = next((j for j, lv, _, _ in found[k + 1:] if lv <= level), len(lines))
        out.append(Heading(level, number, title.strip(), tuple(lines[i + 1:end])))
    return out


def _title_key(title: str) -> str:
    """A title compared case-insensitively, without a leading section number or trailing punctuation."""
    return " ".join(re.sub(rf"^\s*{NUM}\.?\s+", "", title).casefold().split()).rstrip(".:")


def _title_matches(cited: str, heading: str) -> bool:
    key = _title_key(cited)
    return key in (_title_key(heading), _title_key(re.sub(r"\s*\([^()]*\)\s*$", "", heading)))


def problems(citation: Citation, docs: Path = DOCS) -> list[str]:
    """Why ``citation`` does not resolve against the files in ``docs`` ([] when it does)."""
    path = docs / f"{citation.doc}.md"
    if not path.is_file():
        return [f"docs/{citation.doc}.md does not exist"]
    heads = headings(path.read_text(encoding="utf-8"))
    targets: list[tuple[str, Heading | None]] = []
    for number in citation.numbers:
        targets.append((f"section {number}", next((h for h in heads if h.number == number), None)))
    for title in citation.titles:
        targets.append((f'section "{title}"', next((h for h in heads if _title_matches(title, h.title)), None)))
    out = [f"docs/{citation.doc}.md has no {what}" for what, head in targets if head is None]
    if citation.items and targets and targets[-1][1] is not None:
        what, head = targets[-1]
        for item in citation.items:
            if not any(re.match(rf"^\s*{item}[.)][ \t]", line) for line in head.body):
                out.append(f"docs/{citation.doc}.md {what} has no numbered item {item}")
    return out


# ---------------------------------------------------------------------------------------------- the checks
def test_every_citation_of_docs_resolves():
    citations = [c for path in cited_sources() for c in citations_in(path)]
    assert len(citations) > 20, "the citation scan found almost nothing: is its pattern broken?"
    bad = [f"{c.source}: {c.text} -> {why}" for c in citations for why in problems(c)]
    assert not bad, "citations of docs/ that do not resolve:\n" + "\n".join(bad)


OUTSIDE_SCAN = ["salma", "notebooks", "tests", "docs", "data_manifests", "README.md", "figures/README.md",
                "Makefile", ".ci"]


def outside_citations(path: Path) -> list[str]:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return []
    text, rel = data.decode("utf-8", errors="replace"), path.relative_to(REPO).as_posix()
    return [f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()} -> cites a file outside the repository"
            for m in OUTSIDE.finditer(text)]


def scanned_for_outside() -> list[Path]:
    files = []
    for name in OUTSIDE_SCAN:
        root = REPO / name
        candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        files += [p for p in candidates
                  if p.resolve() != THIS and not {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"} & set(p.parts)]
    return files


def test_nothing_cites_files_outside_the_repository():
    bad = [line for path in scanned_for_outside() for line in outside_citations(path)]
    assert not bad, "mentions of files outside the repository (cite docs/ instead):\n" + "\n".join(bad)


def test_method_keeps_its_section_numbers():
    heads = headings((DOCS / "method.md").read_text(encoding="utf-8"))
    numbers = [h.number for h in heads if h.number]
    assert [n for n in numbers if "." not in n] == [str(k) for k in range(1, 12)]
    assert [n for n in numbers if n.startswith("3.")] == ["3.1", "3.2", "3.3", "3.4", "3.5"]
    for item in range(1, 7):
        assert not problems(Citation("test", "", "method", numbers=("3.5",), items=(item,)))


@pytest.mark.parametrize("doc, titles", [
    ("design", ["What it is", "Layout", "Package layers", "Data flow (one image, one expression)",
                "Foundation, then fine-tuning", "Presets", "The synthetic benchmark", "Results and provenance",
                "Conventions"]),
    ("foundation", ["How the foundation is made", "Recipes", "History", "Fine-tuning recipe choices",
                    "What the measurements said"]),
])
def test_docs_keep_their_section_titles(doc, titles):
    assert not problems(Citation("test", "", doc, titles=tuple(titles)))


# ---------------------------------------------------------------------------------------------- the parser itself
def one(text: str) -> Citation:
    found = parse_citations(text)
    assert len(found) == 1, found
    return found[0]


def test_parser_reads_a_section_and_an_item():
    c = one("(docs/method.md section 3.5, item 4).")
    assert (c.doc, c.numbers, c.titles, c.items) == ("method", ("3.5",), (), (4,))
    assert one("docs/method.md section 3.5 items 2 and 4").items == (2, 4)


def test_parser_reads_lists_ranges_and_titles():
    assert one("docs/method.md sections 2, 3.1 and 8. One clip").numbers == ("2", "3.1", "8")
    assert one("docs/method.md sections 6-7):").numbers == ("6", "7")
    assert one("docs/method.md sections 2-4").numbers == ("2", "3", "4")
    assert one("docs/method.md section 7's GPU runs").numbers == ("7",)
    assert one('docs/design.md section "Foundation, then fine-tuning") with').titles == ("Foundation, then fine-tuning",)
    assert one("see docs/foundation.md.").numbers == one("see docs/foundation.md.").titles == ()


def test_parser_follows_line_breaks_and_comment_markers():
    assert one('# (docs/foundation.md section\n    # "History"); kept').titles == ("History",)
    assert one('(docs/foundation.md section "What the measurements\n    said"). Used').titles == (
        "What the measurements said",)
    assert one("docs/method.md\n# section 9").numbers == ("9",)


def test_parser_reads_a_second_reference_to_the_same_file():
    found = parse_citations("docs/method.md section 5 (refer format) and section 9 (the probe).")
    assert [c.numbers for c in found] == [("5",), ("9",)]


def test_parser_reads_notebook_json_with_its_line_numbers():
    cell = {"cell_type": "markdown", "id": "x", "metadata": {},
            "source": ["# Title\n", "\n", "As docs/method.md section\n", "3.5, item 3 says.\n"]}
    raw = json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1)
    text, line_of = notebook_text(raw)
    (c,) = parse_citations(text, line_of, "nb.ipynb")
    line = next(i for i, ln in enumerate(raw.splitlines(), 1) if "As docs/method.md" in ln)
    assert (c.numbers, c.items, c.source) == (("3.5",), (3,), f"nb.ipynb:{line}")


def test_checker_rejects_what_does_not_exist(tmp_path):
    (tmp_path / "m.md").write_text("# M\n## 1. One\ntext\n### 1.1 Sub (aside)\n1. first\n2. second\n"
                                   "```\n# 9. not a heading\n```\n## 2 Two\n")
    ok = {"numbers": ("1", "1.1", "2"), "titles": ("one", "Sub", "1.1 Sub (aside)")}
    assert not problems(Citation("t", "", "m", **ok), tmp_path)
    assert not problems(Citation("t", "", "m", numbers=("1.1",), items=(1, 2)), tmp_path)
    assert problems(Citation("t", "", "m", numbers=("9",)), tmp_path) == ["docs/m.md has no section 9"]
    assert problems(Citation("t", "", "m", numbers=("1.1",), items=(3,)), tmp_path)
    assert problems(Citation("t", "", "m", titles=("Three",)), tmp_path)
    assert problems(Citation("t", "", "nope"), tmp_path) == ["docs/nope.md does not exist"]


def test_a_made_up_section_of_the_real_docs_fails():
    assert problems(one("docs/method.md section 12"))
    assert problems(one("docs/method.md section 3.5, item 7"))
    assert problems(one('docs/design.md section "No such title"'))
    assert not problems(one("docs/method.md section 3.5, item 4"))


def test_outside_pattern():
    flagged = [f"/work/{_SHARED}/{_REF}.md", f"see {_REF}.md 3.1", f'{_DES}.md \\"Foundation\\"', f"({_REF} 9)",
               f"../{_SHARED}/notes.md", f"/work/{_SHARED}"]
    clean = ["features shared/cached once", "shared by every run", "docs/method.md section 9", "the reference sheet",
             "runs/shared_cache"]
    assert all(OUTSIDE.search(s) for s in flagged)
    assert not any(OUTSIDE.search(s) for s in clean)
