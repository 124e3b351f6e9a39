"""Tests for salma.report.paper: the paper's numbers (docs/method.md section 6) as labelled data."""

from __future__ import annotations

import pytest

from salma.report import paper


def test_table2_holds_the_final_papers_numbers():
    col = paper.column("Table 2", "RefCOCOg test", paper.TABLE2_ROWS)
    assert col == {"baseline": 77.45, "mba": 78.21, "mba_tmc": 78.28, "salma": 78.42}
    assert paper.column("Table 2", "Ref-DAVIS17 val", paper.TABLE2_ROWS)["salma"] == 71.87
    assert paper.paper_columns("Table 2", "salma") == {"paper: Ref-DAVIS17 val J&F (%)": 71.87,
                                                      "paper: RefCOCOg test cIoU (%)": 78.42}
    assert paper.paper_columns("Table 2", "bias") == {}


def test_table3_keeps_the_draft_beside_the_final_number():
    film = {p.benchmark: p for p in paper.numbers("Table 3", "with FiLM")}
    assert film["Ref-DAVIS17 val"].value == 68.13 and film["Ref-DAVIS17 val"].draft == 73.25
    assert film["MeViS valu"].value == 47.46 and film["MeViS valu"].draft == 50.64


def test_table4_bins_and_n():
    assert [paper.table4_value("baseline", b).n for b in paper.AREA_BIN_NAMES] == [35, 151, 1559, 4896]
    assert paper.table4_value("salma", "<1%").value == 33.2
    assert paper.table4_value("baseline", "all").value == 77.8
    with pytest.raises(ValueError, match="accepted values"):
        paper.table4_value("salma", "<3%")


def test_every_number_is_labelled():
    for table, nums in paper.ALL_TABLES.items():
        assert nums
        for p in nums:
            assert p.table == table and p.metric in ("cIoU", "J&F") and p.benchmark and 0 < p.value < 100
            assert p.label.startswith("paper: ")
    assert len(paper.TABLE1) == 22


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="accepted values"):
        paper.numbers("Table 9")
    with pytest.raises(ValueError, match="its rows"):
        paper.numbers("Table 2", "nope")
    with pytest.raises(ValueError, match="its columns"):
        paper.column("Table 2", "MeViS")
