"""report.json and report.html."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def languages_line(report: Mapping[str, Any], most: int = 8) -> str | None:
    """One summary line of a report's ``languages`` section (records per language, how many the
    detector did not score), or None when no language was identified."""
    langs = report.get("languages")
    if not langs or not langs.get("by_language"):
        return None
    by = langs["by_language"]
    shown = ", ".join(f"{code} {v['records']:,}" for code, v in list(by.items())[:most])
    more = f", {len(by) - most} more" if len(by) > most else ""
    unscored = f"   (not scored by the detector: {langs['not_scored']:,})" if langs.get("not_scored") else ""
    return f"languages: {shown}{more}{unscored}"
