"""Key covariance statistics ``C_l = E[k kᵀ]`` over a text corpus: all layers in one pass, cached, resumable.

Keys are the rewrite-module (MLP output projection) inputs ``k ∈ R^m`` at every real token.  ``C_l``
is the *uncentred* second moment (MEMIT's statistic); the mean is kept too.

Conventions:
    * Tokens: every position with ``attention_mask == 1`` counts, i.e. the text as the tokenizer
      encodes it by default — a BOS token *is* included when the tokenizer adds one (Llama-style
      tokenizers do, GPT-2's does not), as MEMIT's ``layer_stats`` does.
    * Documents longer than ``max_len`` tokens are truncated (their first ``max_len`` tokens count).
    * Accumulation: ``Σ k kᵀ`` and ``Σ k`` are summed in float64 on each layer's own device (models
      split by ``device_map`` stay split).  The per-batch Gram ``KᵀK`` is formed in float64 on the
      CPU and in float32 on accelerators (float64 matmuls are slow on most GPUs), then added to the
      float64 accumulator.  The stored ``C`` and ``mean`` are float32 on the CPU (half the size).
    * The last batch is cut so that exactly ``n_tokens`` tokens count (row-major token order), unless
      the corpus ends first.

Cache layout (``<root>/stats/<model slug>/<corpus slug>/``, root = ``cache_dir`` or ``$GEOMPROBE_CACHE``
or ``~/.cache/geomprobe``): ``layer_<l>.safetensors`` (``C``, ``mean``) + ``layer_<l>.json`` (manifest:
model identity, layer, corpus identity, token count, dtype, max_len), and ``partial.safetensors``
(float64 accumulators + documents consumed) while a build is under way.  All files are written
atomically (temporary file + rename).  A cache built on *more* tokens than asked serves the smaller
request as is (its ``n_tokens`` says how many it holds); one with fewer is rebuilt.  A cache of
another model, corpus, dtype or max_len raises :class:`~geomprobe.errors.CacheMismatchError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

from .errors import CacheMismatchError, GeomprobeError
from .hooks import read
from .positions import Batch, tokenize

if TYPE_CHECKING:
    from .models.load import LM

FORMAT = 1
#: identity fields that must match for a cache to be reused (``name``/``source`` are where it was
#: loaded from, and the identity's ``config_sha`` hashes the load path too: a portable hash is used).
_MODEL_FIELDS = ("model_type", "n_layers", "d_model", "d_mlp", "weight_checksum")

# ---------------------------------------------------------------------------------------------
# built-in text
# ---------------------------------------------------------------------------------------------

#: General-purpose English sentences mixed into the built-in corpus.
SENTENCES = (
    "The weather was mild for most of the week, with light rain on Thursday.",
    "She opened the window and listened to the traffic in the street below.",
    "Most people in the village worked on farms or in the small textile mill.",
    "The committee met twice a month to review the budget and plan new projects.",
    "After dinner, the children played cards while their parents talked about the news.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The library closes at eight in the evening on weekdays and at noon on Saturdays.",
    "He bought a second-hand bicycle and rode it to work every morning.",
    "The river runs through the centre of the town before it reaches the sea.",
    "Scientists measured the temperature of the lake at several depths.",
    "A good night's sleep helps the body recover after a long day.",
    "The museum displays paintings, sculptures and old maps of the region.",
    "Prices rose sharply last year, and many families had to cut their spending.",
    "The train was delayed by twenty minutes because of a signal failure.",
    "Our neighbours planted tomatoes, beans and a few rows of potatoes.",
    "The software update fixed several bugs and made the program start faster.",
    "During the winter the road over the mountain pass is often closed.",
    "The teacher asked the students to write a short essay about their holidays.",
    "Many birds fly south in autumn and return when the days grow longer.",
    "The company announced that it would open a new office next spring.",
    "He read the letter twice before he understood what it meant.",
    "The bridge was built more than a hundred years ago and is still in use.",
    "Fresh bread was sold every morning at the bakery on the corner.",
    "The doctor recommended regular exercise and a balanced diet.",
    "A small boat was tied to the wooden pier near the lighthouse.",
    "The orchestra played a symphony and two shorter pieces after the interval.",
    "The city council voted to extend the opening hours of public parks.",
    "Heavy snow fell overnight, and the schools stayed closed the next day.",
    "She keeps a notebook in her bag to write down ideas as they come.",
    "The football match ended in a draw after a goal in the final minute.",
    "Engineers tested the new engine for several weeks before it was approved.",
    "The old house had thick stone walls and a garden full of roses.",
    "It took them three days to walk from the coast to the capital.",
    "Coffee and tea are among the most widely consumed drinks in the world.",
    "The report describes how the population of the region changed over a century.",
    "He forgot his umbrella on the bus and got soaked on the way home.",
    "The festival attracts thousands of visitors every summer.",
    "Students who attend every lecture usually do better in the final exam.",
    "The moon was bright enough to read by when the clouds moved away.",
    "Farmers in the valley grow wheat, barley and grapes for wine.",
    "The new law requires all restaurants to display their prices clearly.",
    "She spent the afternoon repairing the fence behind the barn.",
    "The book tells the story of a sailor who was lost at sea for a year.",
    "Electric cars have become more common in many countries.",
    "The market square fills with stalls selling fruit, cheese and flowers.",
    "They agreed to meet again after the holidays to finish the work.",
    "The mountain is covered with forest up to about two thousand metres.",
    "A thin layer of dust covered the shelves of the empty room.",
    "The hospital hired more nurses to cope with the busy winter months.",
    "Every language has its own way of expressing time and space.",
    "The pilot announced that the plane would land in about fifteen minutes.",
    "Children learn to speak by listening to the people around them.",
)

#: Short neutral prefixes for sampling from the model ("" = BOS only).
PREFIXES = ("", "The", "In", "It is", "One of the", "When", "There", "A", "This", "After the", "Many", "He", "She",
            "In the year", "According to", "We")


def _builtin_sentences() -> tuple[str, ...]:
    """The built-in declarative prompts (with their true targets) and :data:`SENTENCES`."""
    out: list[str] = []
    try:
        from .data import load_requests

        for r in load_requests("same-subject"):
            text = r.prompt.replace("{}", r.subject) if "{}" in r.prompt else r.prompt
            out.append(f"{text} {r.target_true}.")
    except Exception:  # the built-in request set is optional here; fall back to the sentences alone
        out = []
    seen: set[str] = set()
    uniq = [s for s in out + list(SENTENCES) if not (s in seen or seen.add(s))]
    random.Random(0).shuffle(uniq)  # a fixed order that mixes the prompts and the general sentences
    return tuple(uniq)


# ---------------------------------------------------------------------------------------------
# corpus
# ---------------------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Corpus:
    """A source of documents for the key statistics.

    Attributes:
        source: ``"builtin"`` (model samples + built-in sentences, offline), a local ``.txt`` file
            (documents separated by blank lines) or ``.jsonl`` file (field ``"text"``), or a
            ``datasets`` name ``"name[:config[:split]]"`` (e.g. ``"wikitext:wikitext-103-raw-v1:train"``).
        seed: seed of the built-in corpus' sampling (recorded in its identity).
        sample_tokens: tokens sampled per built-in document.
        sample_batch: built-in documents sampled together (one seeded chunk).
        text_field: the JSONL / datasets field holding the text.
    """

    source: str = "builtin"
    seed: int = 0
    sample_tokens: int = 64
    sample_batch: int = 16
    text_field: str = "text"

    @classmethod
    def of(cls, corpus: "Corpus | str | os.PathLike") -> "Corpus":
        return corpus if isinstance(corpus, Corpus) else cls(str(corpus))

    @property
    def kind(self) -> str:
        """``builtin``, ``txt``, ``jsonl`` or ``datasets``."""
        if self.source == "builtin":
            return "builtin"
        suffix = Path(self.source).suffix.lower()
        if suffix in (".txt", ".jsonl") or Path(self.source).expanduser().exists():
            return "jsonl" if suffix == ".jsonl" else "txt"
        return "datasets"

    @property
    def path(self) -> Path:
        return Path(self.source).expanduser()

    def _check_file(self) -> None:
        if not self.path.is_file():
            raise GeomprobeError(f"corpus file {self.source} not found; pass an existing .txt/.jsonl file or "
                                 "corpus='builtin'")

    def identity(self) -> dict:
        """What determines the documents: kind, file name and sha256, dataset name, or sampling seed."""
        kind = self.kind
        if kind == "builtin":
            fixed = hashlib.sha256("\n".join(_builtin_sentences()).encode()).hexdigest()[:16]
            return {"kind": "builtin", "seed": self.seed, "sample_tokens": self.sample_tokens,
                    "sample_batch": self.sample_batch, "prefixes": len(PREFIXES), "sentences_sha": fixed}
        if kind == "datasets":
            return {"kind": "datasets", "name": self.source, "text_field": self.text_field}
        self._check_file()
        out = {"kind": kind, "name": self.path.name, "sha256": _sha256_file(self.path)}
        if kind == "jsonl":
            out["text_field"] = self.text_field
        return out

    def slug(self) -> str:
        """Folder name of this corpus in the cache."""
        kind = self.kind
        if kind == "builtin":
            return f"builtin-seed{self.seed}"
        if kind == "datasets":
            return "ds-" + _slug(self.source.replace(":", "-").replace("/", "--"))
        return f"{_slug(self.path.stem)}-{kind}"

    def documents(self, lm: "LM | None" = None, start: int = 0) -> Iterator[tuple[int, str]]:
        """Yield ``(index, text)`` for the documents from index ``start`` on (empty ones included).

        The built-in corpus needs ``lm`` (it samples from it) and is endless; files and datasets end.
        """
        kind = self.kind
        if kind == "builtin":
            if lm is None:
                raise GeomprobeError("the built-in corpus samples from the model; pass lm=...")
            yield from _builtin_documents(self, lm, start)
        elif kind == "datasets":
            yield from self._dataset_documents(start)
        else:
            yield from self._file_documents(start)

    def _file_documents(self, start: int) -> Iterator[tuple[int, str]]:
        self._check_file()
        if self.kind == "jsonl":
            docs: Iterator[str] = self._jsonl_texts()
        else:
            docs = self._paragraphs()
        any_text = False
        for i, doc in enumerate(docs):
            any_text = any_text or bool(doc.strip())
            if i >= start:
                yield i, doc
        if not any_text:
            raise GeomprobeError(f"corpus file {self.source} holds no text; pass a file with documents "
                                 "(blank-line separated .txt, or .jsonl with a \"text\" field)")

    def _paragraphs(self) -> Iterator[str]:
        """Blank-line separated documents of a text file, streamed (large files are never read whole)."""
        lines: list[str] = []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    lines.append(line)
                elif lines:
                    yield "".join(lines).strip()
                    lines = []
        if lines:
            yield "".join(lines).strip()

    def _jsonl_texts(self) -> Iterator[str]:
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    raise GeomprobeError(f"{self.source} line {n} is not JSON; fix the line or pass a .txt file") from None
                if not isinstance(rec, dict) or not isinstance(rec.get(self.text_field), str):
                    raise GeomprobeError(f"{self.source} line {n} has no string field {self.text_field!r}; "
                                         f"add it or pass Corpus(..., text_field=...)")
                yield rec[self.text_field]

    def _dataset_documents(self, start: int) -> Iterator[tuple[int, str]]:
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise GeomprobeError(f"corpus {self.source!r} needs the datasets library, which is not installed; "
                                 "pass a local .txt/.jsonl file or corpus='builtin'") from None
        parts = self.source.split(":")
        name, config = parts[0], (parts[1] or None) if len(parts) > 1 else None
        split = parts[2] if len(parts) > 2 and parts[2] else "train"
        try:
            ds = datasets.load_dataset(name, config, split=split, streaming=True)
        except Exception as e:
            raise GeomprobeError(f"cannot load dataset {self.source!r} ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}); "
                                 "pass a local .txt/.jsonl file or corpus='builtin'") from None
        for i, rec in enumerate(ds):
            if i >= start:
                yield i, str(rec.get(self.text_field) or "")


def _builtin_documents(corpus: Corpus, lm: "LM", start: int) -> Iterator[tuple[int, str]]:
    """Endless built-in stream: unit j = ``sample_batch`` model samples (chunk j) + the next 8 built-in sentences.

    Chunk j is sampled with a generator seeded from ``(seed, j)``, so any unit can be produced (or
    skipped, when resuming) without the ones before it.
    """
    fixed = _builtin_sentences()
    per_unit = 8
    index, unit = 0, 0
    while True:
        sentences = list(fixed[unit * per_unit:(unit + 1) * per_unit])
        size = corpus.sample_batch + len(sentences)
        if index + size > start:
            docs = _sample_chunk(lm, corpus, unit) + sentences
            for j, doc in enumerate(docs):
                if index + j >= start:
                    yield index + j, doc
        index += size
        unit += 1


@torch.no_grad()
def _sample_chunk(lm: "LM", corpus: Corpus, chunk: int) -> list[str]:
    """``sample_batch`` texts sampled from the model at temperature 1 (deterministic per seed and chunk).

    A manual decoding loop with the KV cache; sampling happens on the CPU with a seeded generator.
    """
    tok = lm.tokenizer
    start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    eos = tok.eos_token_id
    rows = []
    for i in range(corpus.sample_batch):
        prefix = PREFIXES[(chunk * corpus.sample_batch + i) % len(PREFIXES)]
        ids = tok(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        if start_id is not None:
            ids = [start_id] + ids
        rows.append(ids or [tok.pad_token_id])
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])  # left padding
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    gen = torch.Generator().manual_seed(int(corpus.seed) * 1_000_003 + int(chunk))
    dev = lm.input_device
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = lm.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), use_cache=True)
    new = []
    for _ in range(corpus.sample_tokens):
        probs = torch.softmax(out.logits[:, -1].float().cpu(), dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen)  # (batch, 1)
        new.append(nxt)
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        pos = pos[:, -1:] + 1
        out = lm.model(input_ids=nxt.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                       cache=out.past_key_values, use_cache=True)
    sampled = torch.cat(new, dim=1).tolist()
    texts = []
    for r, s in zip(rows, sampled):
        if eos is not None and eos in s:
            s = s[:s.index(eos)]
        texts.append(tok.decode(r + s, skip_special_tokens=True).strip())
    return texts


# ---------------------------------------------------------------------------------------------
# the statistic
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyCovariance:
    """``C = E[k kᵀ]`` (uncentred) of one layer's keys over a corpus.

    Attributes:
        layer: layer index.
        C: (m, m) float32 on the CPU, from a float64 accumulator.
        mean: (m,) float32 ``E[k]``.
        n_tokens: tokens the statistic was estimated on.
        model: the model's identity (``LM.identity``).
        corpus: the corpus identity (:meth:`Corpus.identity`).
        dtype: the forward dtype (``"float32"``, ``"bfloat16"``...).
        max_len: tokens per document at most.
    """

    layer: int
    C: torch.Tensor = field(repr=False)
    mean: torch.Tensor = field(repr=False)
    n_tokens: int
    model: dict = field(default_factory=dict)
    corpus: dict = field(default_factory=dict)
    dtype: str = "float32"
    max_len: int = 0

    def __post_init__(self) -> None:
        if self.C.dim() != 2 or self.C.shape[0] != self.C.shape[1]:
            raise ValueError(f"C must be square (m, m), got {tuple(self.C.shape)}")
        if self.mean.shape != (self.C.shape[0],):
            raise ValueError(f"mean must be ({self.C.shape[0]},), got {tuple(self.mean.shape)}")
        if self.n_tokens <= 0:
            raise ValueError(f"n_tokens must be positive, got {self.n_tokens}")
        if not (torch.isfinite(self.C).all() and torch.isfinite(self.mean).all()):
            raise ValueError(f"layer {self.layer}: key statistics hold non-finite values")

    @property
    def m(self) -> int:
        return self.C.shape[0]


class _Acc:
    """Float64 sums ``Σ k kᵀ`` and ``Σ k`` per layer, each on its layer's device."""

    def __init__(self, lm: "LM", layers: Sequence[int]):
        self.layers = list(layers)
        self.kk = {}
        self.k = {}
        for l in self.layers:
            dev = lm.device_of(l)
            self.kk[l] = torch.zeros(lm.d_mlp, lm.d_mlp, dtype=torch.float64, device=dev)
            self.k[l] = torch.zeros(lm.d_mlp, dtype=torch.float64, device=dev)
        self.tokens = 0
        self.docs = 0

    def add(self, keys: dict[int, torch.Tensor], keep: torch.Tensor) -> int:
        """Add the keys of the kept tokens; ``keys[l]`` is (batch, seq, m), ``keep`` (batch, seq) bool."""
        n = int(keep.sum())
        for l in self.layers:
            acc = self.kk[l]
            k = keys[l][keep.to(keys[l].device)]
            gram_dtype = torch.float64 if acc.device.type == "cpu" else torch.float32
            k = k.to(gram_dtype)
            acc += (k.T @ k).to(torch.float64)
            self.k[l] += k.sum(0, dtype=torch.float64)
        self.tokens += n
        return n

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for l in self.layers:
            out[f"kk.{l}"] = self.kk[l].cpu()
            out[f"k.{l}"] = self.k[l].cpu()
        return out

    def load(self, tensors: dict[str, torch.Tensor], tokens: int, docs: int) -> None:
        for l in self.layers:
            self.kk[l].copy_(tensors[f"kk.{l}"])
            self.k[l].copy_(tensors[f"k.{l}"])
        self.tokens, self.docs = tokens, docs

    def result(self, l: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = max(self.tokens, 1)
        return (self.kk[l] / n).float().cpu(), (self.k[l] / n).float().cpu()


def _keep_mask(mask: torch.Tensor, remaining: int) -> torch.Tensor:
    """Real tokens, cut to the first ``remaining`` of them in row-major order. (batch, seq) bool."""
    real = mask.bool()
    count = real.flatten().cumsum(0).view_as(real)
    return real & (count <= remaining)


def _batches(lm: "LM", corpus: Corpus, start: int, batch_size: int, max_len: int) -> Iterator[tuple[int, Batch]]:
    """Yield ``(documents consumed after this batch, tokenised batch)``; empty documents are skipped."""
    texts: list[str] = []
    last = start - 1
    for i, doc in corpus.documents(lm, start):
        last = i
        if doc.strip():
            texts.append(doc)
        if len(texts) == batch_size:
            yield last + 1, tokenize(lm.tokenizer, texts, max_length=max_len)
            texts = []
    if texts:
        yield last + 1, tokenize(lm.tokenizer, texts, max_length=max_len)


def _on_batch(step: int, acc: _Acc) -> None:
    """Called after every accumulated batch (and its checkpoint); tests monkeypatch it."""


def _forward_keys(lm: "LM", layers: Sequence[int], batch: Batch, stop: bool = True) -> dict[int, torch.Tensor]:
    with torch.no_grad(), read(lm, layers, ("key",), stop=stop) as reads:
        lm.forward(batch)
    return reads["key"]


def _run(lm: "LM", layers: Sequence[int], corpus: Corpus, n_tokens: int, max_len: int, batch_size: int,
         acc: _Acc, progress: bool, checkpoint: Any = None, checkpoint_every: int = 0) -> bool:
    """Accumulate from ``acc.docs`` until ``n_tokens``; returns True when the corpus ended first."""
    from .progress import progress as _progress

    bar = _progress(n_tokens, f"key covariance L{list(layers)}", "tok", initial=acc.tokens, lines=True,
                    enabled=progress and acc.tokens < n_tokens,
                    announce=f"building key covariance for layers {list(layers)} on {n_tokens:,} tokens "
                             "(first run only; cached afterwards)")
    exhausted = True
    step = 0
    try:
        if acc.tokens < n_tokens:
            for docs_after, batch in _batches(lm, corpus, acc.docs, batch_size, max_len):
                keys = _forward_keys(lm, layers, batch)
                n = acc.add(keys, _keep_mask(batch.attention_mask, n_tokens - acc.tokens))
                acc.docs = docs_after
                step += 1
                bar.update(n)
                done = acc.tokens >= n_tokens
                if not done and checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
                    checkpoint(acc)  # whole batches only: the last (cut) batch is never checkpointed
                _on_batch(step, acc)
                if done:
                    exhausted = False
                    break
        else:
            exhausted = False
    finally:
        bar.close()
    return exhausted


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------

def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$GEOMPROBE_CACHE``, else ``~/.cache/geomprobe``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("GEOMPROBE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geomprobe"


def model_slug(lm: "LM") -> str:
    """Folder name of a model: the built-in name, the directory's name, or the HF id with ``--``."""
    name = str(lm.name)
    p = Path(name).expanduser()
    if p.is_dir() or name.startswith(("/", ".", "~")):
        name = p.resolve().name
    return _slug(name.replace("/", "--"))


def stats_dir(lm: "LM", corpus: "Corpus | str", cache_dir: str | os.PathLike | None = None) -> Path:
    """``<root>/stats/<model slug>/<corpus slug>/``, with ``-<dtype>`` appended below float32.

    Statistics of one model in two dtypes live side by side, so switching ``--dtype`` never asks the
    user to delete a cache; a folder used by another dtype is still refused by the manifest check.
    """
    dtype = _dtype_name(lm)
    return cache_root(cache_dir) / "stats" / model_slug(lm) / (
        Corpus.of(corpus).slug() + ("" if dtype == "float32" else f"-{dtype}"))


def _config_sha(lm: "LM") -> str:
    """Hash of the model config without the load path (``_name_or_path``)."""
    cfg = {k: v for k, v in lm.model.config.to_dict().items() if k not in ("_name_or_path", "name_or_path")}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _dtype_name(lm: "LM") -> str:
    return str(lm.dtype).replace("torch.", "")


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, data: dict) -> None:
    _atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=1, sort_keys=True), "utf-8"))


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    _atomic_write(path, lambda p: save_file({k: v.contiguous() for k, v in tensors.items()}, str(p), metadata))


def _check_match(where: Path, what: str, saved: dict, lm: "LM", corpus_id: dict, max_len: int) -> None:
    """Raise :class:`CacheMismatchError` when ``saved`` (a manifest or checkpoint state) is not ours."""
    fix = f"pass another cache_dir or delete {where}"
    if saved.get("dtype") != _dtype_name(lm):  # first: another dtype also changes the weight checksum
        raise CacheMismatchError(f"{what} in {where} was built in {saved.get('dtype')}, the model runs in "
                                 f"{_dtype_name(lm)}; load the model in {saved.get('dtype')}, or {fix}")
    model = saved.get("model", {})
    for key in _MODEL_FIELDS:
        if model.get(key) != lm.identity.get(key):
            raise CacheMismatchError(f"{what} in {where} belongs to another model ({key}: cached {model.get(key)!r}, "
                                     f"this model {lm.identity.get(key)!r}); {fix}")
    if saved.get("model_config_sha") != _config_sha(lm):
        raise CacheMismatchError(f"{what} in {where} belongs to another model config ({model.get('name')!r}); {fix}")
    if saved.get("corpus") != corpus_id:
        raise CacheMismatchError(f"{what} in {where} was built on another corpus ({_short(saved.get('corpus'))} vs "
                                 f"{_short(corpus_id)}); {fix}")
    if saved.get("max_len") != max_len:
        raise CacheMismatchError(f"{what} in {where} was built with max_len={saved.get('max_len')}, not {max_len}; "
                                 f"pass max_len={saved.get('max_len')}, or {fix}")


def _short(corpus_id: Any) -> str:
    if not isinstance(corpus_id, dict):
        return repr(corpus_id)
    return ",".join(f"{k}={str(v)[:12]}" for k, v in sorted(corpus_id.items()))


def _header(lm: "LM", corpus_id: dict, max_len: int) -> dict:
    return {"format": FORMAT, "model": dict(lm.identity), "model_config_sha": _config_sha(lm), "corpus": corpus_id,
            "dtype": _dtype_name(lm), "max_len": max_len}


def _load_layer(folder: Path, layer: int, lm: "LM", corpus_id: dict, n_tokens: int, max_len: int) -> KeyCovariance | None:
    """The cached statistic of ``layer``, or None when absent, incomplete or built on too few tokens."""
    from safetensors import safe_open

    man_path, ten_path = folder / f"layer_{layer}.json", folder / f"layer_{layer}.safetensors"
    if not (man_path.is_file() and ten_path.is_file()):
        return None
    try:
        man = json.loads(man_path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    _check_match(folder, f"the layer-{layer} key statistics", man, lm, corpus_id, max_len)
    if man.get("layer") != layer or (man["n_tokens"] < n_tokens and not man.get("exhausted")):
        return None
    with safe_open(str(ten_path), framework="pt") as f:
        if (f.metadata() or {}).get("n_tokens") != str(man["n_tokens"]):
            return None  # the tensors and the manifest are from different builds
        C, mean = f.get_tensor("C"), f.get_tensor("mean")
    return KeyCovariance(layer, C, mean, int(man["n_tokens"]), man["model"], man["corpus"], man["dtype"], man["max_len"])


def _save_layer(folder: Path, stat: KeyCovariance, header: dict, exhausted: bool, docs: int) -> None:
    _write_tensors(folder / f"layer_{stat.layer}.safetensors", {"C": stat.C, "mean": stat.mean},
                   {"n_tokens": str(stat.n_tokens)})
    _write_json(folder / f"layer_{stat.layer}.json",
                {**header, "layer": stat.layer, "n_tokens": stat.n_tokens, "exhausted": exhausted,
                 "docs_consumed": docs, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})


def _load_partial(folder: Path, acc: _Acc, lm: "LM", corpus_id: dict, n_tokens: int, max_len: int) -> bool:
    """Restore ``acc`` from ``partial.safetensors`` when it is a checkpoint of the same build."""
    from safetensors import safe_open

    path = folder / "partial.safetensors"
    if not path.is_file():
        return False
    with safe_open(str(path), framework="pt") as f:
        state = json.loads((f.metadata() or {}).get("state", "{}"))
        _check_match(folder, "the checkpoint of an interrupted build", state, lm, corpus_id, max_len)
        if state.get("layers") != acc.layers or state.get("tokens", 0) > n_tokens:
            return False  # another layer set, or more tokens than now asked: start afresh
        acc.load({k: f.get_tensor(k) for k in f.keys()}, int(state["tokens"]), int(state["docs"]))
    return True


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------

def key_covariance(lm: "LM", layers: Sequence[int] | int, corpus: "Corpus | str" = "builtin", n_tokens: int = 100_000,
                   max_len: int = 256, batch_size: int = 16, cache_dir: str | os.PathLike | None = None,
                   progress: bool = True, resume: bool = True, cache: bool = True,
                   checkpoint_every: int = 50) -> dict[int, KeyCovariance]:
    """``C_l = E[k kᵀ]`` (uncentred) for every layer in ``layers``, in one pass over the corpus.

    The forward stops after the deepest layer asked for.  Cached layers are loaded (and checked to
    belong to this model, corpus, dtype and max_len); the rest are built together and cached.

    Args:
        lm: the model.
        layers: layer index or indices.
        corpus: a :class:`Corpus` or its source string (``"builtin"``, a .txt/.jsonl path, a datasets name).
        n_tokens: tokens to estimate on (fewer if the corpus ends first, with a warning).
        max_len: documents are truncated to this many tokens.
        batch_size: documents per forward.
        cache_dir: cache root (``<root>/stats/<model>/<corpus>/``); default ``$GEOMPROBE_CACHE`` or
            ``~/.cache/geomprobe``.
        progress: show a tqdm progress bar.
        resume: continue an interrupted build from its checkpoint (else start afresh).
        cache: read and write the disk cache at all.
        checkpoint_every: batches between checkpoints of the accumulators (0: none).

    Returns:
        ``{layer: KeyCovariance}`` in the order of ``layers``.

    Raises:
        CacheMismatchError: the cache folder holds statistics of another model, corpus, dtype or max_len.
    """
    layers = [layers] if isinstance(layers, int) else list(layers)
    if not layers:
        raise GeomprobeError("no layers given; pass at least one layer index")
    for l in layers:
        lm._check_layer(l)
    if n_tokens <= 0 or max_len <= 0 or batch_size <= 0:
        raise GeomprobeError("n_tokens, max_len and batch_size must be positive; pass positive values")
    corpus = Corpus.of(corpus)
    corpus_id = corpus.identity()
    header = _header(lm, corpus_id, max_len)
    folder = stats_dir(lm, corpus, cache_dir) if cache else None
    out: dict[int, KeyCovariance] = {}
    if folder is not None:
        for l in dict.fromkeys(layers):
            hit = _load_layer(folder, l, lm, corpus_id, n_tokens, max_len)
            if hit is not None:
                out[l] = hit
    todo = sorted(set(layers) - set(out))
    if todo:
        acc = _Acc(lm, todo)
        save_ckpt = None
        if folder is not None:
            partial = folder / "partial.safetensors"
            if resume:
                _load_partial(folder, acc, lm, corpus_id, n_tokens, max_len)
            elif partial.exists():
                partial.unlink()

            def save_ckpt(a: _Acc) -> None:
                state = {**header, "layers": a.layers, "tokens": a.tokens, "docs": a.docs}
                _write_tensors(partial, a.tensors(), {"state": json.dumps(state)})
        exhausted = _run(lm, todo, corpus, n_tokens, max_len, batch_size, acc, progress, save_ckpt, checkpoint_every)
        if acc.tokens == 0:
            raise GeomprobeError(f"corpus {corpus.source} yielded no tokens; pass a corpus with text")
        if exhausted:
            warnings.warn(f"corpus {corpus.source} has only {acc.tokens} tokens (asked {n_tokens}); "
                          "the statistics use them all", stacklevel=2)
        for l in todo:
            C, mean = acc.result(l)
            out[l] = KeyCovariance(l, C, mean, acc.tokens, dict(lm.identity), corpus_id, _dtype_name(lm), max_len)
            if folder is not None:
                _save_layer(folder, out[l], header, exhausted, acc.docs)
        if folder is not None and (folder / "partial.safetensors").exists():
            (folder / "partial.safetensors").unlink()
    return {l: out[l] for l in layers}


def _sync(lm: "LM") -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_covariance(lm: "LM", layers: Sequence[int], corpus: "Corpus | str" = "builtin", n_tokens: int = 20_000,
                     max_len: int = 256, batch_size: int = 16) -> dict:
    """Time the one-pass build against one pass per layer, and the plain forward throughput.

    The batches are tokenised (and, for the built-in corpus, sampled) before any timing; no cache.

    Returns:
        dict with ``layers``, ``n_tokens``, ``one_pass_s``, ``per_layer_s``, ``speedup``
        (per_layer / one_pass; the per-layer passes also stop after their layer),
        ``per_layer_full_s`` / ``speedup_vs_full`` (per-layer passes that run the whole model), ``forward_s`` (full forwards, no hooks), ``forward_tok_s``,
        ``one_pass_tok_s``, ``device`` and ``dtype``.
    """
    layers = sorted(set([layers] if isinstance(layers, int) else layers))
    corpus = Corpus.of(corpus)
    batches: list[tuple[Batch, torch.Tensor]] = []
    total = 0
    for _, batch in _batches(lm, corpus, 0, batch_size, max_len):
        keep = _keep_mask(batch.attention_mask, n_tokens - total)
        batches.append((batch, keep))
        total += int(keep.sum())
        if total >= n_tokens:
            break

    def build(ls: Sequence[int], stop: bool = True) -> float:
        acc = _Acc(lm, ls)
        _sync(lm)
        t0 = time.perf_counter()
        for batch, keep in batches:
            acc.add(_forward_keys(lm, ls, batch, stop), keep)
        _sync(lm)
        return time.perf_counter() - t0

    def forward_all() -> float:
        _sync(lm)
        t0 = time.perf_counter()
        with torch.no_grad():
            for batch, _ in batches:
                lm.forward(batch)
        _sync(lm)
        return time.perf_counter() - t0

    build(layers[:1]) if batches else None  # warm-up
    one = build(layers)
    per = sum(build([l]) for l in layers)
    naive = sum(build([l], stop=False) for l in layers)
    fwd = forward_all()
    return {"layers": list(layers), "n_tokens": total, "one_pass_s": one, "per_layer_s": per,
            "speedup": per / one if one > 0 else math.nan, "per_layer_full_s": naive,
            "speedup_vs_full": naive / one if one > 0 else math.nan, "forward_s": fwd,
            "forward_tok_s": total / fwd if fwd > 0 else math.nan, "one_pass_tok_s": total / one if one > 0 else math.nan,
            "device": str(lm.input_device), "dtype": _dtype_name(lm)}


__all__ = ["Corpus", "KeyCovariance", "SENTENCES", "bench_covariance", "cache_root", "key_covariance", "model_slug",
           "stats_dir"]
