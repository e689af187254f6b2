"""Shared fixtures: tiny local models and tokenizers, the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(autouse=True, scope="session")
def _no_user_caches(tmp_path_factory):
    """No fixture of any scope writes the user's ~/.cache/smorm: a feature store of the session's own (each
    test gets a fresh one below; session- and module-scoped fixtures run before it), and trainer runs
    report MFU against a fixed peak, so no test times matmuls."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMORM_FEATURE_CACHE", str(tmp_path_factory.mktemp("features-session")))
        patch.setenv("SMORM_PEAK_FLOPS", "1e12")
        yield


@pytest.fixture(autouse=True)
def _own_feature_store(tmp_path_factory, monkeypatch):
    """Each test's runs share a feature store of their own, never the user's ~/.cache/smorm/features."""
    monkeypatch.setenv("SMORM_FEATURE_CACHE", str(tmp_path_factory.mktemp("features")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(f"the shared data folder is expected at {SHARED_DATA} (beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from smorm.testing import tiny_tokenizer as build

    return build()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama + byte tokenizer saved as a Hugging Face folder."""
    from smorm.testing import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
