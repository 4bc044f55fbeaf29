"""Shared test set-up."""

import pytest


@pytest.fixture(autouse=True)
def _private_data_cache(tmp_path, monkeypatch):
    """Every test (and the runs it starts) caches decoded data in its own folder, never in the
    user's ~/.cache/imbal."""
    monkeypatch.setenv("IMBAL_CACHE", str(tmp_path / "cache"))
