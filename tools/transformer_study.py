"""Transformer study: bits per weight against perplexity / embedding cosine, per QP, per role, per policy.

For each model (registry names ``gpt2-tiny``: perplexity on the Jane Austen test split;
``all-minilm-l6-v2``: mean and worst cosine of 200 sentence embeddings to the float model's), in
one run:

- ``float``; ``int8 per-channel + zstd`` and ``int8 per-tensor + zstd`` (real encodes, ``--int8-only``);
  ``RTN 4-bit g128`` (round-to-nearest symmetric 4-bit, one scale per 128 consecutive weights of a
  row, every quantized matrix; simulated, counted as 4 + 16/128 bits per weight);
- QP sweeps with one QP for every coded matrix and three quantization layouts: ``per-tensor``
  (``--policy classic --granularity per-tensor``), ``per-row`` (``--policy classic --granularity
  per-channel``) and ``policy layout`` (``--qp N``: the Transformer policy's layouts, one QP);
- per-role sensitivity: the policy layout with one role (embedding, position, and the layer
  kinds attention-in / attention-out / mlp-in / mlp-out) coded at a QP, every other tensor float;
- the default policy (fidelity targets) and the same targets shifted by ``--shifts`` dB: the
  rate-fidelity curve of the default. The default row is also encoded and decoded for real
  through ``api.encode`` / ``api.decode`` and its bytes checked against the composed ones.

Each matrix is coded once per (layout, QP) with the encoder's own coders (:mod:`weightcodec.storage`)
and cached (``--cache``); rows combine the cached reconstructions, so every configuration costs one
evaluation, not one encode. Bits per weight are over the quantized matrices (Linear and embedding
weights: their HEVC or int8 data plus scales); ``file_bytes`` adds the tensors stored exactly and
the header of the real default encode.

Writes ``transformers.json`` (schema ``weightcodec-transformer-study/1``), ``transformers.md`` and one
plot per model under ``--out``::

    nice -n 19 python -m tools.transformer_study --out docs/results/transformers
    python -m tools.transformer_study --models gpt2-tiny --limit 4096 --sweep-qps 22,28 --out build/ts  # quick
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import click
import numpy as np
import torch

from weightcodec import api
from weightcodec.atomic import atomic_write
from weightcodec.backends import get_backend
from weightcodec.config import EncodeConfig, HevcSettings, build_encode_config
from weightcodec.errors import WeightcodecError
from weightcodec.measure import human_bytes, machine_info
from weightcodec.modelio import LoadedModel, load_model
from weightcodec.plan import TensorPlan, plan_encode
from weightcodec.policy import TransformerPolicy, tensor_role
from weightcodec.quant import QuantizedTensor
from weightcodec.storage import CODERS, EncodeContext
from weightcodec.storage.base import as_numpy, to_float32
from weightcodec.storage.hevc import decode_matrix

SCHEMA = "weightcodec-transformer-study/1"
MODELS = ("gpt2-tiny", "all-minilm-l6-v2")
LAYOUTS = ("per-tensor", "per-row", "policy")
#: Finer roles than the policy's, for the sensitivity table (name patterns; first match wins).
STUDY_ROLES = (
    ("embedding", None), ("position", None),
    ("attention-in", re.compile(r"(query|key|value|q_proj|k_proj|v_proj|c_attn|qkv)")),
    ("attention-out", re.compile(r"(attention\.output\.dense|attn\.c_proj|o_proj|out_proj)")),
    ("mlp-in", re.compile(r"(intermediate\.dense|mlp\.c_fc|up_proj|gate_proj|fc1)")),
    ("mlp-out", re.compile(r"((?<!attention\.)output\.dense|mlp\.c_proj|down_proj|fc2)")),
    ("other", re.compile(r".")),
)


def study_role(name: str, shape: tuple[int, ...]) -> str:
    role = tensor_role(name, shape)
    if role != "layer":
        return role
    return next(label for label, pattern in STUDY_ROLES[2:] if pattern.search(name))


# --- one model and its score ---------------------------------------------------------------------------
@dataclass
class Subject:
    """The model under study: its float tensors (as read from its folder) and a scorer."""

    name: str
    loaded: LoadedModel  # what `wcodec encode FOLDER` reads
    score: Callable[[Mapping[str, torch.Tensor] | None], dict]
    metric: str  # "perplexity" (lower is better) | "cosine"
    plan: list[TensorPlan] = field(default_factory=list)  # the default policy's plan

    @property
    def state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        return self.loaded.state_dict

    @property
    def quantized(self) -> list[TensorPlan]:
        return [t for t in self.plan if t.storage in ("hevc", "int8")]

    @property
    def headline(self) -> str:
        return "perplexity" if self.metric == "perplexity" else "cosine"


def registry_subject(name: str, limit: int | None) -> Subject:
    from weightcodec.evaluation import Evaluator

    evaluator = Evaluator.create(name, limit=limit)
    loaded = load_model(evaluator.weights)
    return Subject(name, loaded, evaluator.score, evaluator.metric)


# --- per-tensor candidates: each matrix coded once per (layout, QP), cached -------------------------------
def layout_plan(base: TensorPlan, layout: str, qp: int | None) -> TensorPlan:
    """``base`` (the default policy's plan of a quantized tensor) re-planned with ``layout`` at ``qp``
    (None: int8, no HEVC)."""
    if layout == "per-tensor":
        fields = dict(granularity="per-tensor", axis=0, col_scales=False)
    elif layout == "per-row":
        fields = dict(granularity="per-channel", axis=0, col_scales=False)
    else:  # the policy's own layout for this tensor
        fields = dict(granularity=base.granularity, axis=base.axis, col_scales=base.col_scales)
    if qp is None or base.hevc is None:
        return replace(base, storage="int8", hevc=None, **fields)
    return replace(base, storage="hevc", hevc=HevcSettings(**{**base.hevc.__dict__, "qp": qp}), **fields)


@dataclass(frozen=True)
class Candidate:
    bytes: int  # data + scales (+ column scales)
    values: np.ndarray  # int8
    scales: np.ndarray
    col_scales: np.ndarray | None
    granularity: str
    axis: int

    def reconstruction(self) -> np.ndarray:
        return QuantizedTensor(self.values, self.scales, self.granularity, self.axis, col_scales=self.col_scales).dequantize()


class Candidates:
    """Coded-and-decoded versions of the subject's matrices, keyed by (tensor, layout, QP), on disk."""

    def __init__(self, subject: Subject, cache: Path, backend: str = "pyav") -> None:
        self.subject = subject
        self.backend = get_backend(backend)
        self.ctx = EncodeContext(backend=self.backend, zstd_level=19)
        digest = hashlib.sha256()
        for name, tensor in subject.state_dict.items():
            digest.update(name.encode())
            digest.update(as_numpy(tensor).tobytes()[:4096])
        self.folder = cache / f"{subject.name}-{digest.hexdigest()[:12]}"
        self.coded_seconds = 0.0

    def get(self, plan: TensorPlan) -> Candidate:
        qp = plan.hevc.qp if plan.hevc is not None else "int8"
        tag = f"{plan.granularity}-a{plan.axis}{'-cols' if plan.col_scales else ''}"
        if plan.hevc is not None:  # the encoder settings this matrix is coded with are part of the key
            settings = plan.hevc.for_matrix(plan.numel)
            key = json.dumps([settings.preset, settings.chroma, settings.x265_params()], sort_keys=True, default=str)
            tag += "-" + hashlib.sha256(key.encode()).hexdigest()[:10]
        path = self.folder / tag / str(qp) / f"{plan.name}.npz"
        if path.exists():
            z = np.load(path)
            return Candidate(int(z["bytes"]), z["values"], z["scales"], z["col_scales"] if z["col_scales"].size else None,
                             plan.granularity, plan.axis)
        started = time.perf_counter()
        array = as_numpy(self.subject.state_dict[plan.name])
        coded = CODERS[plan.storage].encode(array, plan, self.ctx)
        scales = np.frombuffer(coded.scales, "<f4").copy()
        cols = np.frombuffer(coded.col_scales, "<f4").copy() if coded.col_scales is not None else None
        if plan.storage == "hevc":
            values = decode_matrix(self.backend, coded.data, coded.hevc, plan.name).reshape(plan.shape)
        else:
            from weightcodec.storage.base import quantize_planned

            values = quantize_planned(array, plan).values
        size = len(coded.data) + len(coded.scales) + (len(coded.col_scales) if coded.col_scales else 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, bytes=size, values=values, scales=scales,
                 col_scales=cols if cols is not None else np.zeros(0, np.float32))
        self.coded_seconds += time.perf_counter() - started
        return Candidate(size, values, scales, cols, plan.granularity, plan.axis)


def compose(subject: Subject, candidates: Candidates, choice: Callable[[TensorPlan], TensorPlan | None]
            ) -> tuple[dict[str, torch.Tensor], int, int]:
    """The state_dict with each quantized tensor replaced by ``choice(plan)``'s reconstruction
    (None: left float), and the bytes and element count of the replaced tensors."""
    state = dict(subject.state_dict)
    total = count = 0
    for base in subject.quantized:
        plan = choice(base)
        if plan is None:
            continue
        candidate = candidates.get(plan)
        dtype = subject.state_dict[base.name].dtype
        state[base.name] = torch.from_numpy(candidate.reconstruction()).to(dtype)
        total += candidate.bytes
        count += base.numel
    return state, total, count


# --- baselines ---------------------------------------------------------------------------------------------
def rtn4_group128(weights: np.ndarray, *, group: int = 128) -> np.ndarray:
    """Round-to-nearest symmetric 4-bit (levels -8..7, scale max|w|/7) per group of ``group``
    consecutive weights of each row (a shorter last group when the row length is not a multiple)."""
    w = np.asarray(weights, dtype=np.float32)
    matrix = w.reshape(w.shape[0], -1)
    out = np.empty_like(matrix)
    for start in range(0, matrix.shape[1], group):
        block = matrix[:, start:start + group]
        scale = np.abs(block).max(axis=1, keepdims=True) / 7.0
        scale[scale == 0] = 1.0
        out[:, start:start + group] = np.clip(np.rint(block / scale), -8, 7) * scale
    return out.reshape(w.shape)


@dataclass
class Study:
    subject: Subject
    candidates: Candidates
    progress: Callable[[str], None]
    rows: list[dict] = field(default_factory=list)
    reference: dict | None = None

    def _score(self, state=None) -> dict:
        started = time.perf_counter()
        result = self.subject.score(state)
        return {**{k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.items()},
                "eval_seconds": round(time.perf_counter() - started, 1)}

    def add(self, kind: str, label: str, *, bits: float | None, matrix_bytes: int | None, score: dict, **extra) -> dict:
        row = {"kind": kind, "label": label, "bits_per_weight": None if bits is None else round(bits, 4),
               "matrix_bytes": matrix_bytes, **score, **extra}
        if self.reference is not None:
            row.update(self.delta(score))
        self.rows.append(row)
        self.progress(f"{self.subject.name}: {label}: " + ", ".join(
            f"{k}={v}" for k, v in row.items() if k not in ("kind", "label", "layer_qps", "eval_seconds")))
        return row

    def delta(self, score: dict) -> dict:
        if self.subject.metric == "perplexity":
            ref = self.reference["perplexity"]
            return {"perplexity_change_pct": round(100.0 * (score["perplexity"] / ref - 1.0), 4)}
        return {}

    @property
    def quantized_elements(self) -> int:
        return sum(t.numel for t in self.subject.quantized)

    # rows
    def float_row(self) -> None:
        score = self._score()
        self.reference = score
        self.add("float", "float32", bits=None, matrix_bytes=None, score=score)

    def int8_rows(self) -> None:
        for granularity in ("per-channel", "per-tensor"):
            config = build_encode_config(policy="classic", granularity=granularity, int8_only=True)
            encoded = api.encode(self.subject.loaded, config=config)
            decoded = api.decode(encoded.data)
            matrix = sum(l.stored_bytes for l in encoded.report.layers if l.storage in ("int8", "hevc"))
            self.add("int8", f"int8 {granularity} + zstd", bits=8 * matrix / self.quantized_elements,
                     matrix_bytes=matrix, file_bytes=encoded.report.total_bytes, score=self._score(decoded.state_dict))

    def rtn_row(self) -> None:
        state = dict(self.subject.state_dict)
        for plan in self.subject.quantized:
            tensor = state[plan.name]
            state[plan.name] = torch.from_numpy(rtn4_group128(to_float32(as_numpy(tensor), plan.dtype))).to(tensor.dtype)
        bits = 4 + 16 / 128
        self.add("rtn4", "RTN 4-bit, group 128 (simulated)", bits=bits,
                 matrix_bytes=int(bits * self.quantized_elements / 8), score=self._score(state))

    def sweep_rows(self, qps: list[int]) -> None:
        for layout in LAYOUTS:
            for qp in qps:
                state, size, count = compose(self.subject, self.candidates, lambda p: layout_plan(p, layout, qp))
                self.add("sweep", f"{layout} QP {qp}", layout=layout, qp=qp, bits=8 * size / count,
                         matrix_bytes=size, score=self._score(state))

    def role_rows(self, qps: list[int]) -> None:
        roles = {t.name: study_role(t.name, t.shape) for t in self.subject.quantized if t.hevc is not None}
        for role in dict.fromkeys(roles.values()):
            members = [n for n, r in roles.items() if r == role]
            for qp in qps:
                state, size, count = compose(
                    self.subject, self.candidates, lambda p: layout_plan(p, "policy", qp) if p.name in members else None)
                self.add("role", f"{role} only, QP {qp}", role=role, qp=qp, tensors=len(members), elements=count,
                         bits=8 * size / count, matrix_bytes=size, score=self._score(state))

    def policy_rows(self, shifts: list[float], base: TransformerPolicy) -> None:
        for shift in shifts:
            policy = base.shifted(shift)
            plans = plan_encode(self.subject.state_dict, EncodeConfig(policy="transformer", transformer=policy),
                                heads=self.subject.loaded.heads).tensors
            by_name = {p.name: p for p in plans}
            state, size, count = compose(self.subject, self.candidates, lambda p: by_name[p.name])
            qps = {p.name: p.hevc.qp for p in plans if p.hevc is not None}
            self.add("policy", "default policy" if shift == 0 else f"policy, targets {shift:+g} dB", shift_db=shift,
                     targets_db={"layer": policy.layer_target_db, "position": policy.position_target_db,
                                 "embedding": policy.embedding_target_db, "head": policy.head_target_db},
                     qp_range=[min(qps.values()), max(qps.values())] if qps else None, layer_qps=qps,
                     bits=8 * size / count, matrix_bytes=size, score=self._score(state))

    def budget_rows(self, drops: list[float], qps: list[int]) -> None:
        """:func:`weightcodec.allocation.encode_to_budget` with an accuracy budget on this model's own
        score (perplexity: a drop of 1 point = +1 % perplexity; cosine: 1 point = 0.01 of mean
        cosine), data-free sensitivities, its candidates per-row / per-tensor symmetric int8 at
        ``qps`` (the allocation has no column scales); the file found is decoded and scored here."""
        from weightcodec.allocation import AccuracyBudget, SearchSpace, encode_to_budget
        from weightcodec.errors import BudgetError

        ref = self.reference[self.subject.headline]

        def points(state) -> float:
            value = self.subject.score(state)[self.subject.headline]
            return -100.0 * value / ref if self.subject.metric == "perplexity" else 100.0 * value

        space = SearchSpace(qps=tuple(qps), schemes=("symmetric-int8",), layouts=False, float16=False)
        for drop in drops:
            started = time.perf_counter()
            try:
                answer = encode_to_budget(self.subject.loaded, None, budget=AccuracyBudget(
                    max_drop=drop, score=points, reference=points(None)), space=space, best_effort=True)
            except BudgetError as exc:
                self.progress(f"{self.subject.name}: budget {drop}: {exc}")
                continue
            report = answer.result.report
            matrix = sum(l.stored_bytes for l in report.layers if l.storage in ("int8", "hevc"))
            decoded = api.decode(answer.result.data)
            self.add("budget", f"accuracy budget {drop:g} points (allocation)", max_drop=drop, met=answer.met,
                     bits=8 * matrix / self.quantized_elements, matrix_bytes=matrix, file_bytes=report.total_bytes,
                     evaluations=len(answer.evaluations), search_seconds=round(time.perf_counter() - started, 1),
                     score=self._score(decoded.state_dict))

    def real_default_row(self) -> None:
        """``wcodec encode FOLDER`` then ``wcodec decode``: the default, for real."""
        started = time.perf_counter()
        encoded = api.encode(self.subject.loaded)
        seconds = time.perf_counter() - started
        decoded = api.decode(encoded.data)
        matrix = sum(l.stored_bytes for l in encoded.report.layers if l.storage in ("int8", "hevc"))
        composed = next((r for r in self.rows if r["kind"] == "policy" and r.get("shift_db") == 0), None)
        self.add("default", "wcodec encode (default), real file", bits=8 * matrix / self.quantized_elements,
                 matrix_bytes=matrix, file_bytes=encoded.report.total_bytes,
                 header_bytes=encoded.report.header_bytes, encode_seconds=round(seconds, 1),
                 matches_composed=None if composed is None else composed["matrix_bytes"] == matrix,
                 score=self._score(decoded.state_dict))


# --- output ------------------------------------------------------------------------------------------------
def _metric_text(row: dict, metric: str) -> str:
    if metric == "perplexity":
        change = row.get("perplexity_change_pct")
        return f"{row['perplexity']:.2f}" + ("" if change is None else f" ({change:+.2f} %)")
    return f"{row['cosine']:.4f} / {row['worst']:.4f}"


def markdown(result: dict) -> str:
    lines = [f"Generated by `python -m tools.transformer_study` ({result['generated']}); machine: "
             f"{result['machine'].get('cpu_model')}, {result['machine'].get('logical_cores')} cores (shared).", ""]
    for model in result["models"]:
        metric = model["metric"]
        head = "perplexity (change)" if metric == "perplexity" else "cosine mean / worst"
        lines += [f"### {model['name']}", "",
                  f"{model['quantized_tensors']} quantized matrices, {model['quantized_elements']:,} weights; "
                  f"float32 file {human_bytes(model['float32_bytes'])}.", "",
                  f"| row | bits/weight | {head} | matrix bytes | QPs |", "|---|---:|---:|---:|---|"]
        for row in model["rows"]:
            bits = "-" if row["bits_per_weight"] is None else f"{row['bits_per_weight']:.2f}"
            size = "-" if row["matrix_bytes"] is None else human_bytes(row["matrix_bytes"])
            qps = row.get("qp_range") or row.get("qp") or ""
            if isinstance(qps, list):
                qps = f"{qps[0]}-{qps[1]}"
            lines.append(f"| {row['label']} | {bits} | {_metric_text(row, metric)} | {size} | {qps} |")
        lines.append("")
    return "\n".join(lines)


def plot(result: dict, out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    for model in result["models"]:
        metric = model["metric"]
        key = "perplexity_change_pct" if metric == "perplexity" else "cosine"
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for layout, marker in zip(LAYOUTS, "osd"):
            pts = sorted((r["bits_per_weight"], r[key]) for r in model["rows"] if r.get("layout") == layout)
            if pts:
                ax.plot(*zip(*pts), marker=marker, label=f"one QP, {layout} scales")
        pts = sorted((r["bits_per_weight"], r[key]) for r in model["rows"] if r["kind"] == "policy")
        if pts:
            ax.plot(*zip(*pts), marker="*", markersize=10, label="policy (fidelity targets)")
        for row in model["rows"]:
            if row["kind"] in ("int8", "rtn4", "default", "budget"):
                ax.scatter([row["bits_per_weight"]], [row[key]], marker="x" if row["kind"] != "default" else "P", s=60,
                           zorder=5)
                ax.annotate(row["label"].split(" (")[0].split(",")[0], (row["bits_per_weight"], row[key]), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
        if metric == "perplexity":
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.set_ylabel("perplexity change vs float (%)")
            ax.set_ylim(-0.5, 10)
        else:
            ax.axhline(0.99, color="grey", lw=0.8, ls="--")
            ax.set_ylabel("embedding cosine to float (mean of 200 sentences)")
            ax.set_ylim(0.8, 1.002)
        ax.set_xlabel("bits per weight (quantized matrices)")
        ax.set_title(model["name"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        path = out / f"{model['name']}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def run_study(subject: Subject, *, cache: Path, sweep_qps: list[int], role_qps: list[int], shifts: list[float],
              parts: set[str], progress: Callable[[str], None], budgets: list[float] = (1.0,),
              budget_qps: list[int] = (16, 22, 28)) -> dict:
    """Every row of one model (see the module doc)."""
    config = EncodeConfig(policy="transformer")
    subject.plan = plan_encode(subject.state_dict, config, heads=subject.loaded.heads).tensors
    candidates = Candidates(subject, cache)
    study = Study(subject, candidates, progress)
    study.float_row()
    if "baselines" in parts:
        study.int8_rows()
        study.rtn_row()
    if "policy" in parts:
        study.policy_rows(sorted(set(shifts) | {0.0}), config.transformer)
        study.real_default_row()
    if "sweep" in parts:
        study.sweep_rows(sweep_qps)
    if "roles" in parts:
        study.role_rows(role_qps)
    if "budget" in parts:
        study.budget_rows(budgets, budget_qps)
    float_bytes = sum(t.numel() * t.element_size() for t in subject.state_dict.values())
    return {"name": subject.name, "metric": subject.metric, "quantized_tensors": len(subject.quantized),
            "quantized_elements": study.quantized_elements, "float32_bytes": float_bytes,
            "coding_seconds": round(candidates.coded_seconds, 1), "rows": study.rows}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--models", default=",".join(MODELS), show_default=True, help="Registry names, comma-separated.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for transformers.json, transformers.md and the plots.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache of coded matrices [default: $WEIGHTCODEC_CACHE/transformer-study].")
@click.option("--sweep-qps", default="16,22,28,34", show_default=True, help="QPs of the one-QP sweeps.")
@click.option("--role-qps", default="16,22,28", show_default=True, help="QPs of the per-role rows.")
@click.option("--shifts", default="-6,-3,0,3,6", show_default=True,
              help="Shifts (dB) of the policy's fidelity targets: the default's rate-fidelity curve.")
@click.option("--parts", default="baselines,policy,sweep,roles", show_default=True,
              help="Which rows: baselines, policy, sweep, roles, budget (accuracy budgets through the allocation).")
@click.option("--budgets", default="1", show_default=True,
              help="Accuracy budgets (points: % perplexity increase, or 0.01 of mean cosine) of the budget rows.")
@click.option("--budget-qps", default="16,22,28", show_default=True, help="QPs the budget search may use.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Score on the first N tokens (perplexity) or sentences (cosine) only: a quick run.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads.")
def main(models, out, cache, sweep_qps, role_qps, shifts, parts, budgets, budget_qps, limit, threads):
    """Bits per weight against perplexity / embedding cosine for Transformers (see the module doc)."""
    torch.set_num_threads(threads)
    if cache is None:
        from weightcodec.evaluation.cache import cache_dir

        cache = cache_dir() / "transformer-study"
    started = time.perf_counter()
    result = {"schema": SCHEMA, "generated": time.strftime("%Y-%m-%d"), "machine": machine_info(),
              "settings": {"sweep_qps": _ints(sweep_qps), "role_qps": _ints(role_qps), "shifts_db": _floats(shifts),
                           "limit": limit, "policy": TransformerPolicy().__dict__ | {"qp_range": list(TransformerPolicy().qp_range)}},
              "models": []}
    try:
        for name in [m.strip() for m in models.split(",") if m.strip()]:
            subject = registry_subject(name, limit)
            result["models"].append(run_study(subject, cache=cache, sweep_qps=_ints(sweep_qps), role_qps=_ints(role_qps),
                                              shifts=_floats(shifts), parts=set(parts.split(",")),
                                              progress=lambda text: click.echo(text, err=True),
                                              budgets=_floats(budgets), budget_qps=_ints(budget_qps)))
    except WeightcodecError as exc:
        raise click.ClickException(str(exc)) from None
    result["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "transformers.json", [(json.dumps(result, indent=1, sort_keys=True) + "\n").encode()])
    atomic_write(out / "transformers.md", [markdown(result).encode()])
    for path in plot(result, out):
        click.echo(f"wrote {path}", err=True)
    click.echo(f"wrote {out / 'transformers.json'} and transformers.md in {result['seconds']:.0f} s", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
