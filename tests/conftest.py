import json
import os
from pathlib import Path

import pytest

from tests.mlflow_server import serve_mlflow

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


# ---------------------------------------------------------------- tiny models (tests/tiny_models.py)
# Session-scoped and never written to: a test that changes a model copies it or saves beside it.

@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    """The default tiny random Llama (seed 0) and its tokenizer, in HF format."""
    from tests.tiny_models import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), seed=0)


@pytest.fixture(scope="session")
def tiny_llama_seed1(tmp_path_factory) -> str:
    """``tiny_llama``'s architecture and tokenizer with other weights."""
    from tests.tiny_models import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama_seed1"), seed=1)


@pytest.fixture(scope="session")
def train_llama(tmp_path_factory) -> str:
    """A two-layer tiny Llama with tied embeddings and a tokenizer of tests.ray_training.TEXTS, which
    a dozen training steps visibly learn."""
    from tests.ray_training import TEXTS
    from tests.tiny_models import save_tiny_llama, tiny_tokenizer

    return save_tiny_llama(tmp_path_factory.mktemp("train_llama"), tiny_tokenizer(TEXTS, vocab_size=320),
                           hidden_size=48, layers=2, tied=True)


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory, data_dir) -> str:
    """The real tiny base model (collapse_ray.base_model) on a tiny budget: a 512-entry BPE and a
    2-layer Llama (head_dim 32, as vLLM's CPU attention needs) trained for a few seconds on 100
    real CodeSearchNet functions. What the real grids run."""
    from collapse_ray.base_model import build_base_model
    from collapse_ray.config import TinyModelConfig

    records = [json.loads(line) for line in (data_dir / "codesearchnet" / "codesearchnet_python_sample.jsonl").open()]
    tiny = TinyModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, context_length=256,
                           train_minutes=0.05, cache_dir=str(tmp_path_factory.mktemp("tiny")))
    return str(build_base_model(tiny, corpus=[r["original_string"] for r in records], progress=lambda m: None))


# ---------------------------------------------------------------- services

@pytest.fixture(scope="module")
def local_ray():
    """A local two-CPU Ray for the module, yielded as the ``ray`` module."""
    import ray

    from collapse_ray.ray_here import init_ray

    init_ray(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture
def module_by_value(request):
    """Ray's workers cannot import a test module: while the test runs, the classes it defines travel
    to them by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(request.module)
    yield
    cloudpickle.unregister_pickle_by_value(request.module)


@pytest.fixture
def mlflow_server(tmp_path):
    """An ``mlflow server`` for one test, stopped after it."""
    with serve_mlflow(tmp_path) as uri:
        yield uri
