"""Shared test set-up."""

import os

import pytest


@pytest.fixture(autouse=True)
def _private_data_cache(tmp_path, monkeypatch):
    """Every test (and the runs it starts) caches decoded data in its own folder, never in the
    user's ~/.cache/imbal."""
    monkeypatch.setenv("IMBAL_CACHE", str(tmp_path / "cache"))


def pytest_collection_modifyitems(config, items):
    """Tests marked `slurm_real` need a real Slurm cluster (scripts/slurm_local.sh start): they
    run only with IMBAL_SLURM=1 and are otherwise deselected, so a run without a cluster reports
    them as deselected, never as skipped or passed."""
    if os.environ.get("IMBAL_SLURM") == "1":
        return
    drop = [item for item in items if item.get_closest_marker("slurm_real")]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [item for item in items if not item.get_closest_marker("slurm_real")]
