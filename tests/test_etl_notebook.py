"""notebooks/01_etl.ipynb runs top to bottom (papermill) at the smoke params, inline and sharded."""

import shutil

import nbformat
import pytest

from mt5study.paths import NOTEBOOKS, PARAMS

NOTEBOOK = NOTEBOOKS / "01_etl.ipynb"


def _manpages_installed() -> bool:
    from mt5study.data.config import ManpagesSource
    from mt5study.data.sources import ManpagesReader

    return shutil.which("groff") is not None and bool(ManpagesReader(ManpagesSource())._dpkg_packages())


@pytest.mark.slow
@pytest.mark.skipif(not _manpages_installed(), reason="manual pages not installed (scripts/install_manpages.sh)")
def test_notebook_runs_with_smoke_params(tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), kernel_name="python3", progress_bar=False,
        parameters={"params_path": str(PARAMS / "cpu" / "etl_smoke.yaml"), "out_dir": str(tmp_path / "etl"),
                    "sharded_out_dir": str(tmp_path / "etl_sharded"), "bench_path": str(tmp_path / "no_bench.json")},
    )
    assert (tmp_path / "etl" / "manifest.json").is_file()
    assert (tmp_path / "etl_sharded" / "manifest.json").is_file()
    nb = nbformat.read(str(out), as_version=4)
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images == 3  # shares, token lengths, fertility
