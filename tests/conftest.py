"""Shared fixtures; helpers live in helpers.py (importable because this file puts tests/ on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def fast_config() -> dict[str, Any]:
    """Config overrides for tests of the pipeline itself: exact dedup only, no detector, no
    diversity or HTML report (those have tests of their own)."""
    return {"detector": {"enabled": False}, "dedup": {"near": False}, "quiet": True, "workers": 1,
            "report": {"diversity": False, "html": False}}
