"""cluster.yaml against Ray's own launcher checks; the AWS calls `ray up` makes next cannot run here."""
import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def prepared(config) -> dict:
    """The file after Ray fills in its defaults, validated against Ray's JSON schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_ray_schema_validation_and_rejects_a_typo(config, prepared):
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    typo = copy.deepcopy(config)
    typo["available_node_types"]["gpu_h100"]["min_wokers"] = 0
    with pytest.raises(ValidationError, match="min_wokers"):
        validate_config(prepare_config(typo))


def test_every_node_type_pins_a_current_image_instead_of_rays_end_of_life_default(prepared):
    """Without an ImageId Ray fills in its default, the Ubuntu 18.04 DLAMI with CUDA 11.2."""
    for name, node_type in prepared["available_node_types"].items():
        image = node_type["node_config"].get("ImageId", "")
        assert image.startswith("resolve:ssm:/aws/service/") and "22.04" in image, name
        if node_type["resources"].get("GPU", 0):
            assert "nvidia-driver-gpu-ubuntu-22.04" in image, name


def test_head_runs_mlflow_with_its_database_off_the_shared_file_system(prepared):
    (start,) = [c for c in prepared["head_start_ray_commands"] if "mlflow server" in c]
    store = start.split("--backend-store-uri")[1].split()[0]
    assert store.startswith("sqlite:////") and "/shared/" not in store
    assert "--artifacts-destination /shared/" in start
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"]["GPU"] == 0


def test_nodes_can_reach_the_shared_file_system_over_nfs(prepared):
    rules = prepared["provider"]["security_group"]["IpPermissions"]
    assert any(r["IpProtocol"] == "tcp" and r["FromPort"] <= 2049 <= r["ToPort"] for r in rules)
    assert any("mount -t nfs4" in c and "/shared" in c for c in prepared["setup_commands"])


def test_gpu_nodes_install_the_gpu_extra_with_the_same_ray_as_the_launcher(prepared):
    import tomllib

    install = " ".join(prepared["setup_commands"])
    assert "[gpu]" in install
    pinned = install.split("ray[default,tune,train]==")[1].split('"')[0]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"ray[default]=={pinned}" in extras["cluster"] and any(d.startswith("boto3") for d in extras["cluster"])
    assert max(t["resources"].get("GPU", 0) for t in prepared["available_node_types"].values()) == 8


def test_humaneval_is_staged_on_the_shared_file_system_by_the_head(prepared):
    assert any("HumanEval.jsonl.gz" in c and "/shared/data" in c for c in prepared["head_setup_commands"])
