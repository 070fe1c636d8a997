"""The scaling study (notebook 06): how the best batch and learning rate move with model size.

config (params schema), budget (token budget per size), fits (surface, power laws, frontier),
steptime (step-time model and its CPU measurement), recommend (the cluster recipe per mT5 size),
study (orchestration through the studies runner) and tables (what the report shows).
"""

from __future__ import annotations


def report_tables(root):
    """The scaling study's tables for the report and the site (see mt5study.scaling.tables)."""
    from mt5study.scaling.tables import report_tables as _tables

    return _tables(root)
