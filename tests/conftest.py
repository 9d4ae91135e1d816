import os
from pathlib import Path

import pytest

from repo_boundary import RepoBoundary

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"     # real-data samples kept in the repo (see their PROVENANCE.md)

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
if (REPO / ".nltk_data").exists():
    os.environ.setdefault("NLTK_DATA", str(REPO / ".nltk_data"))


def pytest_configure(config):
    """Fail any test that reads a file beside the clone (see repo_boundary.py)."""
    boundary = RepoBoundary(REPO)
    boundary.install()
    config.pluginmanager.register(boundary, "repo-boundary")


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
