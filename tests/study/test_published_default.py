"""The package's default distiller is the one the published main table chose on val (issue 21).

docs/results.json is written by the study harness (`compare ... --report-only --results-json`); its
`val_best_method` is the best val mean among the distillers run at the most seeds at the converged budget.
`distill.method`'s default, the quick preset `make demo` runs and the table's own `default_method` must
all name it, and the default's val-tuned settings (lix_train/study/tuned.yaml) must be what a user gets
without options, so the demo runs the setting the evidence is about.
"""

from __future__ import annotations

import json
from functools import reduce

from repo_paths import ROOT

from lix_train.config import resolve
from lix_train.distillers.config import METHODS, DistillConfig
from lix_train.experiment import DEFAULT_PRESET, PRESETS_DIR, ExperimentConfig
from lix_train.study import tuning
from lix_train.study.grid import BASELINE, named_row
from lix_train.study.table import val_choice

RESULTS = ROOT / "docs" / "results.json"
PRESETS = (DEFAULT_PRESET, "quick", "synthetic")  # make demo runs `quick`, the study `synthetic`


def _published() -> dict:
    return json.loads(RESULTS.read_text())


def _resolved() -> dict[str, ExperimentConfig]:
    """Each preset's config as a user gets it without options."""
    return {preset: resolve(ExperimentConfig, PRESETS_DIR, preset, None, {}) for preset in PRESETS}


def test_the_default_distiller_is_the_one_the_main_table_chose_on_val():
    results = _published()
    chosen = results["val_best_method"]
    assert chosen in METHODS and chosen != "baseline"
    assert DistillConfig().method == chosen == results["default_method"]
    for preset, config in _resolved().items():
        assert config.distill.method == chosen, preset


def test_the_default_runs_its_val_tuned_setting_without_options():
    chosen = _published()["val_best_method"]
    setting = tuning.load_tuned(METHODS)[chosen]
    for preset, config in _resolved().items():
        for dotted, value in setting.items():
            assert reduce(getattr, dotted.split("."), config) == value, (preset, dotted)


def test_the_chosen_method_was_run_at_the_most_seeds_and_leads_them_on_val():
    """The choice re-derived, by the harness's own rule, from the per-seed val scores results.json publishes
    (never test): the baseline and the named rows (X = zeros twins, the wide student) are controls."""
    results = _published()
    rows = [{"method": m, "val_seeds": row["val_seeds"], "val_mean": sum(row["val"]) / len(row["val"])}
            for m, row in results["methods"].items() if row["val"]]
    controls = {BASELINE} | {m for m in results["methods"] if named_row(m) is not None}
    assert val_choice(rows, controls)["method"] == results["val_best_method"]


def test_results_md_quotes_the_main_table_as_the_harness_wrote_it():
    """results.md V.0's tables are lines of the archived table.md (docs/studies/v2/tune), never typed in, and
    its results.json is the same report: the baseline's per-seed test scores agree."""
    results_md = (ROOT / "docs" / "results.md").read_text()
    main_table = results_md.split("### V.0", 1)[1].split("\n### ", 1)[0]
    archived = (ROOT / "docs" / "studies" / "v2" / "tune" / "table.md").read_text().splitlines()
    rows = [line for line in main_table.splitlines() if line.startswith("|")]
    assert len(rows) > 20 and [row for row in rows if row not in archived] == []
    seeds = ", ".join(f"{v:.1f}" for v in _published()["methods"][BASELINE]["test"])
    assert any(row.startswith("| baseline (RGB only, L_H) |") and f"| {seeds} |" in row for row in rows)
