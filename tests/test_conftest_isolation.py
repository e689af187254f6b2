"""The test session never writes the user's caches: module-scoped fixtures run before function-scoped ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def module_store() -> str:
    return os.environ.get("SMORM_FEATURE_CACHE", "")


def test_a_module_fixture_sees_a_temporary_feature_store_and_peak(module_store, tmp_path_factory):
    from smorm.models.feature_cache import feature_store_root

    base = Path(str(tmp_path_factory.getbasetemp()))
    assert module_store and Path(module_store).is_relative_to(base)
    assert feature_store_root().is_relative_to(base)
    assert os.environ.get("SMORM_PEAK_FLOPS") == "1e12"
