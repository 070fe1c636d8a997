"""nbval runs the notebooks in file order, except the report: 05 reads every other study's folder
(02, 03, 04, and 06 scaling, 07 translation), so it runs after all of them."""

from __future__ import annotations

READS_THE_OTHERS = "05_report.ipynb"


def pytest_collection_modifyitems(session, config, items):  # noqa: ARG001 (pytest's hook signature)
    """Move the report notebook's cells after every other notebook's, keeping their own order."""
    last = [i for i in items if i.path.name == READS_THE_OTHERS]
    if last:
        items[:] = [i for i in items if i.path.name != READS_THE_OTHERS] + last
