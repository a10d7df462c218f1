"""Fixtures for the dedup tests."""

from __future__ import annotations

import pytest

from text.textmaker import TextMaker


@pytest.fixture
def maker() -> TextMaker:
    return TextMaker(seed=1234)
