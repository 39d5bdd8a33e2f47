"""Shared test helpers: where the official reference fixtures live."""
from __future__ import annotations

from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]
_SHARED = _REPO.parent / "shared" / "fixtures" / "official-tiny"
_VENDORED = _REPO / "tests" / "fixtures" / "official-tiny"

FIXTURE_ROOT = _SHARED if _SHARED.is_dir() else _VENDORED
FIXTURE_DIRS = sorted(p for p in FIXTURE_ROOT.iterdir() if p.is_dir())


@pytest.fixture(params=FIXTURE_DIRS, ids=[p.name for p in FIXTURE_DIRS])
def fixture_dir(request) -> Path:
    """Each official-tiny reference folder (config, weights, inputs, expected outputs)."""
    return request.param
