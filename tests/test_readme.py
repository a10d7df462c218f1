"""The README's examples work as shown: the Quickstart's run on the bundled sample with the shipped
model, and the Python examples (printed output included) that need nothing outside this machine.

The examples are read from README.md itself, so an edit there is tested as written.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_wxr_export

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^[ ]*```(\w*)\n(.*?)^[ ]*```", re.S | re.M)


def blocks(language: str, section: str) -> list[str]:
    """The fenced ``language`` blocks under the ``## section`` heading, dedented, in order."""
    start = README.index(f"\n## {section}\n")
    end = README.find("\n## ", start + 1)
    text = README[start:end if end >= 0 else None]
    out = []
    for lang, body in FENCE.findall(text):
        if lang == language:
            lines = body.splitlines()
            indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
            out.append("\n".join(x[indent:] for x in lines) + "\n")
    return out


def test_the_quickstart_runs_the_bundled_sample_with_the_shipped_model(tmp_path: Path) -> None:
    first = blocks("bash", "Quickstart")[0].strip()
    assert "pip install ." in first
    run = shlex.split(first.split("&&")[-1])  # the command after the set-up
    assert run[:3] == ["synthfilter", "run", "examples/sample"]
    (tmp_path / "examples").symlink_to(REPO / "examples")  # run it as written, from a checkout
    proc = subprocess.run([sys.executable, "-m", "synthfilter", *run[1:]], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "SYNTHFILTER_DEBUG": ""})
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / run[run.index("--out") + 1]
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["id"].startswith("synthfilter-default-en@")  # the shipped model
    assert report["synthetic"]["detector_scored"] > 0
    assert report["input"]["records"] > 0 and report["input"]["shards"] == 3
    assert report["output"]["kept"] + report["output"]["rejected"] == report["input"]["records"]
    assert (out / "kept").is_dir() and (out / "rejected").is_dir() 
    assert "kept:" in proc.stdout + proc.stderr


def test_the_datasets_examples_print_what_the_readme_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    map_example, filter_example = blocks("python", "Python and Hugging Face datasets")[:2]
    expected = re.search(r"print\((.*)\)\s+# (.*)$", map_example, re.M)
    assert expected, "the .map example shows its output in a comment"
    ns: dict = {}
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        exec(compile(map_example, "README.md (.map example)", "exec"), ns)
    assert captured.getvalue().strip() == expected.group(2).strip()
    exec(compile(filter_example, "README.md (filter_dataset example)", "exec"), ns)
    result = ns["result"]
    assert len(result.kept) == 2 and len(result.rejected) == 1
    assert result.kept.column_names == ["id", "text"]  # "the kept rows, columns unchanged"
    assert result.rejected["synth_reason"] == ["exact_duplicate"]
    assert result.report["output"]["kept"] == 2


def test_the_gate_example_runs_on_a_wordpress_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (example,) = [b for b in blocks("python", "Gate a CMS export") if "read_exports" in b]
    path = re.search(r'read_exports\(\["([^"]+)"\]\)', example).group(1)
    (tmp_path / path).parent.mkdir(parents=True)
    posts = write_wxr_export(tmp_path / path, 60_000)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        exec(compile(example, "README.md (gate example)", "exec"), ns)
    result = ns["result"]
    assert len(ns["records"]) == posts
    assert {c.rule for c in result.checks} >= {"max_synthetic", "max_duplicates"}
    assert str(result.offending_ids[:10]) in captured.getvalue()
