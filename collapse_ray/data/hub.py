"""Datasets from the Hugging Face hub, failing within seconds where the hub cannot be reached
instead of waiting on ``datasets``' retries (the callers then name the dataset or fall back)."""
from __future__ import annotations

import os
import socket

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def load_hub_dataset(*args: str, timeout: float = 3.0):
    """``datasets.load_dataset(*args)`` (every split), or ConnectionError within ``timeout``
    seconds when an offline variable is set or huggingface.co does not answer."""
    if any(os.environ.get(name, "0") not in ("", "0") for name in OFFLINE_VARIABLES):
        raise ConnectionError("HF offline mode is set")
    with socket.create_connection(("huggingface.co", 443), timeout=timeout):
        pass
    import datasets

    return datasets.load_dataset(*args)
