import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Real data shared beside the repo (never copied into it); .ci/run sets COLLAPSE_RAY_DATA_DIR."""
    path = Path(os.environ.get("COLLAPSE_RAY_DATA_DIR", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real data directory {path} not found (set COLLAPSE_RAY_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> str:
    """One cache for the tiny base model, so the test session builds it once."""
    return str(tmp_path_factory.mktemp("tiny-model-cache"))
