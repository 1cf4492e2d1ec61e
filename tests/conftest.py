import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from tiny import KINDS, save_tiny, tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {k: save_tiny(k, root / k) for k in KINDS}


@pytest.fixture(scope="session")
def tiny_lms(tiny_dirs):
    import geomprobe as gp

    out = {}
    for k, d in tiny_dirs.items():
        # transformers 5 forces Qwen2Tokenizer for qwen2 whatever was saved: pass ours explicitly
        tok = tiny_tokenizer() if k == "qwen2" else None
        out[k] = gp.load_model(str(d), device="cpu", tokenizer=tok)
    return out


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
