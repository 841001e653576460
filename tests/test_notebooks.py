"""CI for the companion: every notebook of notebooks/ executes end to end under the `smoke` profile through the
same papermill runner `make reproduce` uses, and leaves the tables, figures and inspector page it promises.
Numbers from a smoke model mean nothing; the plumbing is what is tested. About two to four minutes."""
import json

import nbformat
import pandas as pd
import pytest

from retune.reproduce import runner as rp
from retune.config.profiles import load_profile

pytest.importorskip("papermill")

TABLES = ["datasets", "training", "per_problem", "main_table", "accuracy_by_size", "memory", "sample_efficiency",
          "prompt_variations", "ablations", "error_analysis", "step_probe"]
FIGURES = ["datasets", "training", "main_table", "accuracy_vs_size", "memory", "sample_efficiency",
           "prompt_variations", "ablations", "error_analysis", "step_probe"]


pytestmark = pytest.mark.slow  # every notebook under the smoke profile: minutes


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    profile = load_profile("smoke", {"paths": {key: str(root / key) for key in ("data", "runs", "results", "figures")}})
    records = rp.reproduce(profile, executed_dir=root / "notebooks", progress=False, log=lambda *_: None)
    return profile, root, records


def test_every_notebook_runs_under_smoke(smoke_run):
    profile, root, records = smoke_run
    assert [r["notebook"] for r in records] == [p.name for p in rp.notebooks()]
    assert all(r["status"] == "ran" for r in records)
    for r in records:
        nb = nbformat.read(r["executed"], as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, (r["notebook"], errors)
        assert rp.marker_path(r["executed"]).is_file()


def test_tables_and_figures_carry_profile_and_seed(smoke_run):
    profile, root, _ = smoke_run
    for name in TABLES:
        assert (root / "results" / f"{name}.csv").is_file(), name
        assert (root / "results" / f"{name}.md").is_file(), name
        meta = json.loads((root / "results" / f"{name}.meta.json").read_text())
        assert meta["profile"] == "smoke" and meta["seeds"] == [0] and "torch" in json.dumps(meta), name
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (root / "figures" / f"{name}.{ext}").stat().st_size > 1000, (name, ext)


def test_main_table_has_the_promised_columns_and_both_splits(smoke_run):
    profile, root, _ = smoke_run
    table = pd.read_csv(root / "results" / "main_table.csv")
    assert {"task", "method", "split", "size_range", "accuracy", "ci_low", "ci_high", "n", "seeds"} <= set(table)
    assert set(table["task"]) == set(profile.tasks) and set(table["method"]) == set(profile.methods)
    assert {"id", "ood"} <= set(table["split"])
    assert ((table["ci_low"] <= table["accuracy"]) & (table["accuracy"] <= table["ci_high"])).all()
    per_problem = pd.read_csv(root / "results" / "per_problem.csv")
    assert len(per_problem) == table.groupby(["task", "method"])["n"].sum().sum()


def test_inspector_page_renders_without_a_kernel(smoke_run):
    _, root, _ = smoke_run
    page = (root / "results" / "failing_traces.html").read_text()
    assert "<details" in page and "Solution" in page
    assert 'class="retune-choice"' in page and "per task &times; method" in page  # says how they were chosen


def outputs(records, name):
    executed = next(r["executed"] for r in records if r["notebook"] == name)
    return [o for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"
            for o in c.get("outputs", [])]


def test_viewers_open_the_traces_03_shipped(smoke_run):
    _, root, records = smoke_run
    assert (root / "results" / "traces.jsonl.gz").is_file() and (root / "results" / "traces.meta.json").is_file()
    inspector = [o for o in outputs(records, "10_trace_inspector.ipynb") if o.get("output_type") == "display_data"]
    # one output: the live widget under a kernel, the static first failure elsewhere
    assert len(inspector) == 1 and "application/vnd.jupyter.widget-view+json" in inspector[0]["data"]
    assert "Static view of" in inspector[0]["data"]["text/html"]
    printed = "".join(o.get("text", "") for o in outputs(records, "10_trace_inspector.ipynb")
                      if o.get("output_type") == "stream")
    assert "no traces" not in printed


def test_the_tour_runs_first_and_trains_nothing(smoke_run):
    _, _, records = smoke_run
    tour = outputs(records, "00_tour.ipynb")  # it runs before 03 shipped anything: it says what to run
    printed = "".join(o.get("text", "") for o in tour if o.get("output_type") == "stream")
    assert "`make reproduce PROFILE=smoke` writes them" in printed and "Loading weights" not in printed
    assert sum("retune-trace" in o.get("data", {}).get("text/html", "") for o in tour) == 1  # the oracle's tree


def test_second_run_reuses_every_notebook(smoke_run):
    profile, root, _ = smoke_run
    again = rp.reproduce(profile, executed_dir=root / "notebooks", progress=False, log=lambda *_: None)
    assert all(r["status"] == "skipped" for r in again)
