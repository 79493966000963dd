"""The Transformer policy (weightcodec.policy), column scales (weightcodec.colscales) and the text
models of the registry. Fast: tiny random matrices; the real models only when installed."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

from weightcodec import api
from weightcodec.colscales import column_scales, quantize_with_col_scales
from weightcodec.config import EncodeConfig, HevcSettings, QuantSettings, build_encode_config
from weightcodec.errors import ConfigError
from weightcodec.plan import plan_encode
from weightcodec.policy import (
    TransformerPolicy,
    hevc_noise_db,
    looks_like_transformer,
    qp_for_target,
    signal_db,
    config_heads,
    tensor_role,
)
from weightcodec.quant import quantize


def transformer_state(seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731
    outliers = torch.ones(256)
    outliers[[3, 77, 200]] = 40.0  # a few large input channels, as MLP down-projections have
    return OrderedDict([
        ("model.embed_tokens.weight", randn(512, 64)),
        ("model.layers.0.self_attn.q_proj.weight", randn(64, 64)),
        ("model.layers.0.mlp.down_proj.weight", randn(64, 256) * outliers),
        ("model.layers.0.input_layernorm.weight", torch.ones(64)),
        ("model.position_embeddings.weight", randn(128, 64)),
    ])


def test_transformers_are_recognised_by_their_attention_names():
    assert looks_like_transformer(["transformer.h.0.attn.c_attn.weight"])
    assert looks_like_transformer(["encoder.layer.0.attention.self.query.weight"])
    assert looks_like_transformer(["model.layers.0.self_attn.q_proj.weight"])
    assert looks_like_transformer(["blocks.0.attn.qkv.weight"])
    assert not looks_like_transformer(["features.0.0.weight", "classifier.1.weight", "l1.weight", "fc.weight"])
    assert not looks_like_transformer(["attn.bias_only"])  # only weights count


@pytest.mark.parametrize("name, role", [
    ("transformer.wte.weight", "embedding"), ("embeddings.word_embeddings.weight", "embedding"),
    ("model.embed_tokens.weight", "embedding"), ("lm_head.weight", "head"), ("output.weight", "head"),
    ("encoder.layer.0.output.dense.weight", "layer"),
    ("transformer.wpe.weight", "position"), ("embeddings.position_embeddings.weight", "position"),
    ("encoder.layer.0.attention.self.query.weight", "layer"), ("transformer.h.0.mlp.c_fc.weight", "layer"),
])
def test_roles(name, role):
    assert tensor_role(name, (512, 64)) == role


def test_output_heads_get_the_head_target():
    """A token embedding that is also the output head (an aliased lm_head, or a config.json that
    ties a head it does not store) is planned as a head: its error reaches the logits directly."""
    assert tensor_role("transformer.wte.weight", (512, 64), head=True) == "head"
    assert tensor_role("transformer.wpe.weight", (512, 64), head=True) == "position"
    names = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight"]
    lm = {"architectures": ["GPT2LMHeadModel"], "tie_word_embeddings": True}
    assert config_heads(lm, names) == {"transformer.wte.weight"}
    assert config_heads({"architectures": ["GPT2LMHeadModel"]}, names) == {"transformer.wte.weight"}  # tied by default
    assert config_heads({**lm, "tie_word_embeddings": False}, names) == set()
    assert config_heads({"architectures": ["BertModel"]}, names) == set()  # no head: a sentence encoder
    assert config_heads(lm, names + ["lm_head.weight"]) == set()  # the head is stored: it is its own tensor
    assert config_heads(["not", "a", "dict"], names) == set()
    state = transformer_state()
    policy = TransformerPolicy(embedding_target_db=12.0, head_target_db=30.0)
    config = EncodeConfig(transformer=policy)
    plain = {p.name: p for p in plan_encode(state, config).tensors}
    tied = dict(state, **{"lm_head.weight": state["model.embed_tokens.weight"]})
    with_head = {p.name: p for p in plan_encode(tied, config).tensors}
    emb = "model.embed_tokens.weight"
    assert plain[emb].role == "embedding" and with_head[emb].role == "head"
    assert with_head["lm_head.weight"].storage == "alias"
    assert with_head[emb].predicted_snr_db >= 30.0 - 1e-6 and with_head[emb].hevc.qp < plain[emb].hevc.qp
    assert (plain[emb].axis, plain[emb].col_scales) == (1, False)  # an input embedding: per-column scales
    assert (with_head[emb].axis, with_head[emb].col_scales) == (0, False)  # a head: one scale per token row
    hinted = {p.name: p for p in plan_encode(state, config, heads={emb}).tensors}
    assert hinted[emb].role == "head" and hinted[emb].hevc.qp == with_head[emb].hevc.qp


def test_noise_table_is_monotonic_and_qp_choice_meets_the_target():
    qps = range(0, 52)
    noise = [hevc_noise_db(q) for q in qps]
    assert all(b > a for a, b in zip(noise, noise[1:]))
    assert noise[22] == pytest.approx(7.2, abs=0.2)  # about QP - 15 dB in the range that matters
    for signal in (22.0, 27.0, 31.0):
        for target in (18.0, 24.0, 30.0):
            qp = qp_for_target(signal, target, (4, 40))
            assert signal - hevc_noise_db(qp) >= target or qp == 4
            assert qp == 40 or signal - hevc_noise_db(qp + 1) < target  # the largest such QP
    assert qp_for_target(31.0, 24.0, (4, 40)) > qp_for_target(25.0, 24.0, (4, 40))  # heavy tails: lower QP


def test_noise_table_matches_the_codec():
    """The table's prediction of the int8 error of a Gaussian matrix, checked against a real encode."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(128, 256)).astype(np.float32)
    q = quantize(w, "per-channel", axis=0)
    for qp in (16, 28):
        config = EncodeConfig(hevc=HevcSettings(qp=qp, preset="ultrafast"), quant=QuantSettings(granularity="per-channel"),
                              policy="classic")
        decoded = api.decode(api.encode({"m.weight": torch.from_numpy(w)}, config=config).data)
        error = decoded.quantized["m.weight"].values.astype(np.float64) - q.values
        assert 10 * np.log10(np.mean(error**2)) == pytest.approx(hevc_noise_db(qp), abs=1.5)


def test_column_scales_even_out_columns_and_round_trip():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(32, 48)).astype(np.float32) * np.linspace(0.01, 10, 48).astype(np.float32)
    w[:, 5] = 0
    cols = column_scales(w)
    assert cols.dtype == np.float32 and np.all(np.isfinite(cols)) and np.all(cols > 0) and cols[5] == 1.0
    live = np.delete(cols, 5)
    assert np.exp(np.mean(np.log(live))) == pytest.approx(1.0, rel=1e-5)
    q = quantize_with_col_scales(w)
    assert q.granularity == "per-channel-2d" and q.values.dtype == np.int8 and q.col_scales is not None
    error = np.abs(q.dequantize() - w)
    # every column within half a step of its own (row x column) scale: small columns stay precise
    bound = 0.5 * q.scales[:, None] * q.col_scales[None, :] * 1.0001 + 1e-12
    assert np.all(error <= bound)
    per_row = quantize(w, "per-channel", axis=0).dequantize()
    small = slice(0, 10)  # the smallest columns: column scales give them far less relative error
    assert np.abs(q.dequantize()[:, small] - w[:, small]).mean() < 0.2 * np.abs(per_row[:, small] - w[:, small]).mean()


def test_policy_plans_roles_layouts_and_qps():
    state = transformer_state()
    plan = {p.name: p for p in plan_encode(state, EncodeConfig()).tensors}
    emb, q, down, norm, pos = (plan[n] for n in state)
    assert (emb.role, emb.axis, emb.col_scales) == ("embedding", 1, False)
    assert (q.role, q.axis, q.col_scales) == ("layer", 0, True)
    assert down.col_scales and pos.role == "position" and norm.storage == "raw"
    policy = TransformerPolicy()
    for p in (emb, q, down, pos):
        assert p.storage == "hevc" and p.predicted_snr_db >= policy.target_db(p.role) - 1e-6
    assert emb.hevc.qp > q.hevc.qp  # embeddings get the lower target
    # a fixed QP, and the classic policy, for the same state
    fixed = {p.name: p for p in plan_encode(state, build_encode_config(qp=30)).tensors}
    assert {p.hevc.qp for p in fixed.values() if p.hevc} == {30} and fixed[q.name].col_scales
    classic = {p.name: p for p in plan_encode(state, build_encode_config(policy="classic")).tensors}
    assert not any(p.col_scales for p in classic.values()) and classic[q.name].hevc.qp == 28
    # --layer-qp still wins for the tensors it names
    named = {p.name: p for p in plan_encode(state, build_encode_config(layer_qp=("*q_proj*=11",))).tensors}
    assert named[q.name].hevc.qp == 11 and named[emb.name].hevc.qp == emb.hevc.qp


def test_classic_models_keep_the_classic_default():
    torch.manual_seed(0)
    state = OrderedDict([("l1.weight", torch.randn(128, 64)), ("l2.weight", torch.randn(10, 128))])
    plans = plan_encode(state, EncodeConfig()).tensors
    assert all(p.role is None and not p.col_scales for p in plans)
    assert {p.hevc.qp for p in plans if p.hevc} == {28}


def test_policy_round_trip_is_accurate_and_smaller_than_int8(tmp_path):
    state = transformer_state()
    result = api.encode(state, tmp_path / "t.wcodec")
    int8 = api.encode(state, config=build_encode_config(policy="classic", granularity="per-channel", int8_only=True))
    assert result.report.total_bytes < 0.75 * int8.report.total_bytes
    decoded = api.decode(tmp_path / "t.wcodec")
    header = decoded.header
    assert header.version == (2, 1)
    assert {t.quant.granularity for t in header.tensors if t.quant} == {"per-channel", "per-channel-2d"}
    for name, tensor in state.items():
        got = decoded.state_dict[name]
        snr = 10 * np.log10(float((tensor**2).sum()) / max(float(((got - tensor) ** 2).sum()), 1e-30))
        assert snr > 15, name  # every matrix keeps its role's fidelity, within the noise model's error
    assert any("Transformer policy" in n.message for n in result.report.notices)


def test_transformer_policy_settings_are_validated():
    with pytest.raises(ConfigError):
        TransformerPolicy(layer_target_db=-1)
    with pytest.raises(ConfigError):
        TransformerPolicy(qp_range=(30, 20))
    with pytest.raises(ConfigError):
        EncodeConfig(policy="bogus")
    assert TransformerPolicy().shifted(3).layer_target_db == TransformerPolicy().layer_target_db + 3


def test_signal_power():
    assert signal_db(np.zeros(4)) == float("-inf")
    assert signal_db(np.full(10, 10)) == pytest.approx(20.0)


# --- the registry's text models (need transformers, the corpus and the models; skip otherwise) -------------
def _text_evaluator(name: str, limit: int):
    pytest.importorskip("transformers")
    from weightcodec.errors import EvaluationError
    from weightcodec.evaluation import Evaluator

    try:
        return Evaluator.create(name, limit=limit)
    except EvaluationError as exc:
        pytest.skip(f"{name} unavailable here: {exc}")


def test_gpt2_tiny_is_scored_by_perplexity_through_the_registry():
    evaluator = _text_evaluator("gpt2-tiny", 512)
    assert evaluator.metric == "perplexity"
    reference = evaluator.score()
    from safetensors.torch import load_file

    state = load_file(str(evaluator.weights / "model.safetensors"))  # no lm_head: tied to wte
    assert "lm_head.weight" not in state
    assert evaluator.score(state)["perplexity"] == pytest.approx(reference["perplexity"])
    state["transformer.wte.weight"] = state["transformer.wte.weight"] * 0.5
    assert evaluator.score(state)["perplexity"] > reference["perplexity"] * 1.05


def test_minilm_is_scored_by_cosine_through_the_registry():
    evaluator = _text_evaluator("all-minilm-l6-v2", 8)
    assert evaluator.metric == "cosine"
    assert evaluator.score()["cosine"] == pytest.approx(1.0, abs=1e-6)
    from safetensors.torch import load_file

    state = load_file(str(evaluator.weights / "model.safetensors"))
    state["encoder.layer.0.output.dense.weight"] = torch.zeros_like(state["encoder.layer.0.output.dense.weight"])
    assert evaluator.score(state)["cosine"] < 0.999


def test_transformer_study_quick_variant(tmp_path):
    """tools/transformer_study on a toy Transformer with a score of its own: the composed default
    row is the real encode, baselines and an accuracy budget through the allocation come out."""
    from tools.transformer_study import Subject, markdown, run_study
    from weightcodec.modelio import LoadedModel

    state = transformer_state()

    def score(decoded):
        if decoded is None:
            return {"cosine": 1.0, "worst": 1.0}
        noise = sum(float((decoded[k].float() - state[k]).pow(2).sum()) for k in state)
        signal = sum(float(state[k].pow(2).sum()) for k in state)
        return {"cosine": 1 - noise / signal, "worst": 1 - noise / signal}

    subject = Subject("toy", LoadedModel("state_dict", state), score, "cosine")
    result = run_study(subject, cache=tmp_path, sweep_qps=[28], role_qps=[28], shifts=[-3.0, 0.0],
                       parts={"baselines", "policy", "sweep", "budget"}, progress=lambda text: None,
                       budgets=[2.0], budget_qps=[22, 28])
    rows = {r["label"]: r for r in result["rows"]}
    default, real = rows["default policy"], rows["wcodec encode (default), real file"]
    assert real["matches_composed"] and real["matrix_bytes"] == default["matrix_bytes"]
    assert real["cosine"] == pytest.approx(default["cosine"])
    assert rows["policy, targets -3 dB"]["bits_per_weight"] < default["bits_per_weight"]
    assert default["bits_per_weight"] < rows["int8 per-channel + zstd"]["bits_per_weight"]
    budget = rows["accuracy budget 2 points (allocation)"]
    assert budget["met"] and budget["cosine"] >= 0.98 - 1e-9
    assert {"policy QP 28", "per-row QP 28", "per-tensor QP 28"} <= rows.keys()
    text = markdown({"generated": "today", "machine": {}, "models": [result]})
    assert "| default policy |" in text
