"""benchmarks/_results.py: every benchmark script rewrites its own RESULTS.md section through it."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from _results import dated_section, replace_section  # noqa: E402

DOC = (
    "# Benchmark results\n\n"
    "## Alpha (issue 1), 2026-01-02\n\nold alpha\n\n"
    "## Alpha extra (issue 7)\n\nnot alpha\n\n"
    "## Beta (issue 2)\n\nold beta\n### sub\nkept with beta\n"
)


def test_replaces_a_dated_section_in_place_and_leaves_the_rest(tmp_path):
    path = tmp_path / "R.md"
    path.write_text(DOC)
    replace_section("Alpha (issue 1)", dated_section("Alpha (issue 1)", "alpha.py", "new alpha\n\n\n"), path)
    text = path.read_text()
    head, rest = text.split("## Alpha extra (issue 7)")
    assert head.startswith("# Benchmark results\n\n## Alpha (issue 1), ")
    assert head.endswith("_`python benchmarks/alpha.py`_\n\nnew alpha\n\n")  # one blank line before the next
    assert "old alpha" not in text
    assert rest == DOC.split("## Alpha extra (issue 7)")[1]  # a title that merely starts alike is untouched


def test_undated_last_section_and_append(tmp_path):
    path = tmp_path / "R.md"
    path.write_text(DOC)
    replace_section("Beta (issue 2)", "## Beta (issue 2)\n\nnew beta", path)
    assert path.read_text() == DOC.split("## Beta")[0] + "## Beta (issue 2)\n\nnew beta\n"
    replace_section("Gamma (issue 3)", "## Gamma (issue 3)\n\ng\n", path)
    assert path.read_text().endswith("new beta\n\n## Gamma (issue 3)\n\ng\n")


def test_rewriting_every_section_of_the_real_file_with_itself_changes_nothing(tmp_path):
    real = (REPO / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    path = tmp_path / "R.md"
    path.write_text(real, encoding="utf-8")
    chunks = real.split("\n## ")[1:]
    for chunk in chunks:
        title = chunk.split("\n", 1)[0].split(", 20")[0]
        replace_section(title, "## " + chunk, path)
    assert path.read_text(encoding="utf-8") == real
