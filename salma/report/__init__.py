"""Reporting: statistics and verdicts, tables, measurements and figures for the notebooks, the result store, RESULTS.md."""
