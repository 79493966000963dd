"""Encoding a whole model to a stated budget: an accuracy drop, or a file size.

:func:`analyze` measures every option of every tensor once (:mod:`.candidates`) and builds the
rate / predicted-loss frontier (:mod:`.solver`); :func:`encode_to_budget` then picks the point:

accuracy budget with a score (``AccuracyBudget(max_drop=..., score=fn)``)
    The most accurate allowed point (every quantized layer at its best int8 option, everything
    else exact) is scored first: if it already drops more than ``max_drop`` the budget cannot be
    met (:class:`~weightcodec.errors.BudgetError`, no file written) unless ``best_effort``. Then the
    search bisects along the frontier on the predicted loss (log scale), scoring each point's real
    decoded file, and keeps the cheapest point whose measured drop is within ``max_drop``. Every
    answer is a measurement on the calibration data, never a prediction.

    A drop measured on n images is noisy: when ``score`` returns one value per sample (e.g. 100
    for a correct image, 0 for a wrong one; their mean is the score) the search knows the paired
    standard error of every drop, se = std(reference_i - score_i) / sqrt(n), and a point passes
    only if ``drop + z * se <= max_drop``, z the normal quantile of ``confidence`` (default
    :data:`DEFAULT_CONFIDENCE`): the budget is then met with that one-sided confidence on images
    like the calibration ones, not just on those images (docs/RESULTS.md measures it on held-out
    images). A score that returns one number gets no margin (se unknown).
accuracy budget without a score (data-free)
    The frontier point whose predicted data-free loss (mean relative per-channel squared error,
    summed over layers) is within :data:`DATA_FREE_LOSS_PER_POINT` x ``max_drop``: a rule of
    thumb checked on one model (docs/RESULTS.md), not a guarantee.
size budget (``SizeBudget(target_bytes=...)``)
    The most accurate frontier point that fits, then the spare bytes spent where they cut the
    most predicted loss; the file is assembled and, if the header made it overshoot, re-planned
    for a smaller budget. With a score, the drop is measured and recorded too.

The chosen plan (method, budget, calibration, measured and predicted figures, per-layer predicted
loss) is written into the file's header as its ``plan`` record (docs/FORMAT.md 3.5) and shown by
``wcodec info``; decoding needs nothing new.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import api
from ..atomic import atomic_write
from ..config import DEFAULT_CONFIDENCE, EncodeConfig
from ..errors import BudgetError, ConfigError
from ..header import PlanRecord
from ..modelio import LoadedModel, load_source
from ..plan import EncodePlan, TensorPlan
from ..report import EncodeResult, Notice
from .candidates import Option, SearchSpace, TensorOptions, measure_options
from .sensitivity import DataFreeSensitivity, Sensitivity
from .solver import Frontier, Point, fill, frontier

#: ``score(state_dict)``: one number (higher is better), or one value per sample whose mean is the score
Score = Callable[[Mapping[str, torch.Tensor]], "float | np.ndarray | torch.Tensor"]
Progress = Callable[[str, int, int], None]
Log = Callable[[str], None]

#: Data-free mode: allowed sum over layers of the mean relative per-channel squared error, per
#: point of accuracy the user may lose: a rule of thumb, not a guarantee. Checked on fmnist-resnet
#: (docs/RESULTS.md, "fmnist-resnet"): budgets 0.25-2 gave held-out drops of 0.15-0.45, i.e. it
#: is conservative there; not calibrated on other models.
DATA_FREE_LOSS_PER_POINT = 0.02

#: Most real scorings the accuracy search makes (after the two ends of the frontier).
DEFAULT_MAX_EVALUATIONS = 10
#: The bisection stops when the passing and failing points differ by less than this share of bytes.
DEFAULT_BYTES_TOLERANCE = 0.005


@dataclass(frozen=True, kw_only=True)
class AccuracyBudget:
    """Lose at most ``max_drop`` of ``score`` (higher is better, e.g. top-1 in percent).

    ``score(state_dict)`` scores a decoded state_dict on calibration data: one number, or better
    one value per sample (their mean is the score), which lets the search hold ``drop + z * se``
    to the budget at ``confidence`` (module docstring); without a score the data-free proxy
    decides (and says so). ``reference`` is the float model's score as ``score`` returns it
    (measured when None). ``description`` and ``samples`` say what the calibration data is (for
    the header).
    """

    max_drop: float
    score: Score | None = None
    reference: "float | np.ndarray | None" = None
    description: str | None = None
    samples: int | None = None
    confidence: float = DEFAULT_CONFIDENCE

    def __post_init__(self) -> None:
        if not isinstance(self.max_drop, (int, float)) or isinstance(self.max_drop, bool) \
                or not math.isfinite(self.max_drop) or self.max_drop < 0:
            raise ConfigError(f"max_drop must be a finite number >= 0, got {self.max_drop!r}")
        if self.score is not None and not callable(self.score):
            raise ConfigError("score must be a callable score(state_dict) -> float")
        if not isinstance(self.confidence, (int, float)) or isinstance(self.confidence, bool) \
                or not 0.5 <= self.confidence < 1:
            raise ConfigError(f"confidence must be a number from 0.5 (no margin) to below 1, got {self.confidence!r}")

    @property
    def z(self) -> float:
        """Standard errors of margin: the normal quantile of ``confidence`` (0 at 0.5)."""
        return statistics.NormalDist().inv_cdf(self.confidence)


@dataclass(frozen=True, kw_only=True)
class SizeBudget:
    """Fit the whole file into ``target_bytes`` with the least predicted loss.

    An optional ``score`` (as in :class:`AccuracyBudget`) measures the result's drop for the record.
    """

    target_bytes: int
    score: Score | None = None
    reference: float | None = None
    description: str | None = None
    samples: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.target_bytes, int) or isinstance(self.target_bytes, bool) or self.target_bytes <= 0:
            raise ConfigError(f"target size must be a positive number of bytes, got {self.target_bytes!r}")


@dataclass
class Evaluation:
    """One frontier point assembled into a real file, decoded and (if there is a score) scored."""

    index: int
    bytes: int  # the whole file
    loss: float  # predicted
    score: float | None = None
    drop: float | None = None
    seconds: float = 0.0
    se: float | None = None  # paired standard error of ``drop`` (per-sample scores only)

    def bound(self, z: float) -> float:
        """``drop + z * se``: the drop the search holds to the budget (``drop`` if se is unknown)."""
        return self.drop + z * (self.se or 0.0)


def split_score(value) -> tuple[float, np.ndarray | None]:
    """A score's mean and its per-sample values (None for a single number).

    Raises:
        ConfigError: not a finite number or a non-empty 1-D array of finite numbers.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (np.ndarray, list, tuple)):
        samples = np.asarray(value, dtype=np.float64)
        if samples.ndim != 1 or samples.size == 0 or not np.isfinite(samples).all():
            raise ConfigError("score(state_dict) must return a finite number or a non-empty 1-D array of finite "
                              f"per-sample values, got an array of shape {samples.shape}")
        return float(samples.mean()), samples
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"score(state_dict) must return a number or per-sample values, got {type(value).__name__}") \
            from None
    if not math.isfinite(number):
        raise ConfigError(f"score(state_dict) returned {number}")
    return number, None


def paired_se(reference: np.ndarray | None, samples: np.ndarray | None) -> float | None:
    """Standard error of ``mean(reference - samples)`` over paired samples (None if unknown)."""
    if reference is None or samples is None:
        return None
    if reference.shape != samples.shape:
        raise ConfigError(f"score(state_dict) returned {samples.size} per-sample values for this file and "
                          f"{reference.size} for the float model: they must be the same samples")
    if samples.size < 2:
        return None
    return float(np.std(reference - samples, ddof=1) / math.sqrt(samples.size))


@dataclass
class Analysis:
    """Every option of every tensor, measured once; reusable for several budgets."""

    loaded: LoadedModel
    config: EncodeConfig
    sensitivity: Sensitivity
    space: SearchSpace
    table: dict[str, TensorOptions]
    front: Frontier
    seconds: float
    candidates: int
    #: real scores of frontier points already measured, by (score callable, point index):
    #: several budgets searched on one analysis score each file once
    scored: dict[tuple[object, int], tuple[int, float, np.ndarray | None, float]] = field(default_factory=dict)

    def choose(self, point: Point) -> dict[str, Option]:
        return self.front.options(point)


@dataclass
class BudgetResult:
    """What :func:`encode_to_budget` made: the file (as :func:`weightcodec.api.encode` returns it),
    the plan record written into its header, and every scored point of the search."""

    result: EncodeResult
    record: PlanRecord
    chosen: dict[str, Option]
    evaluations: list[Evaluation] = field(default_factory=list)
    reference: float | None = None
    notices: list[Notice] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return self.record.met


def analyze(
    source,
    *,
    sensitivity: Sensitivity | None = None,
    config: EncodeConfig | None = None,
    space: SearchSpace | None = None,
    trust_pickle: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Analysis:
    """Code, decode and price every option of every tensor of ``source`` and build the frontier.

    Raises:
        ConfigError: settings the search cannot honour (per-layer QPs, lossless).
    """
    config = config or EncodeConfig()
    if config.layer_qp or config.layer_granularity or config.hevc.lossless:
        raise ConfigError("a budget chooses every layer's QP, granularity and storage: drop --layer-qp, "
                          "--layer-granularity and --lossless")
    space = space or SearchSpace()
    sensitivity = sensitivity or DataFreeSensitivity()
    started = time.perf_counter()
    loaded = load_source(source, trust_pickle=trust_pickle)
    table = measure_options(loaded.state_dict, config, space, sensitivity, workers=workers, progress=progress)
    candidates = sum(len(t.options) for t in table.values())
    front = frontier(table)
    on_hull = {id(o) for hull in front.hulls for o in hull}
    for entry in table.values():  # keep the coded bytes of hull options only
        entry.options = [o if id(o) in on_hull else replace(o, coded=None) for o in entry.options]
    return Analysis(loaded, config, sensitivity, space, table, front, time.perf_counter() - started, candidates)


def build_plan(analysis: Analysis, chosen: Mapping[str, Option], record: PlanRecord | None = None,
               notices: list[Notice] | None = None) -> EncodePlan:
    """The :class:`~weightcodec.plan.EncodePlan` of a choice (tensors in state_dict order)."""
    tensors: list[TensorPlan] = [chosen[name].plan for name in analysis.loaded.state_dict]
    return EncodePlan(tensors, list(notices or []), record)


def assemble(analysis: Analysis, chosen: Mapping[str, Option], output: str | Path | None = None, *,
             record: PlanRecord | None = None, notices: list[Notice] | None = None,
             metadata: Mapping[str, str] | None = None) -> EncodeResult:
    """The file of a choice, from the options' coded bytes (nothing is coded again)."""
    plan = build_plan(analysis, chosen, record, notices)
    precoded = {name: o.coded for name, o in chosen.items() if o.coded is not None}
    return api.encode_planned(analysis.loaded, plan, output, config=analysis.config, metadata=metadata,
                              precoded=precoded, workers=1)


def decode_state_dict(data: bytes, config: EncodeConfig) -> dict[str, torch.Tensor]:
    return api.decode(data, backend=config.backend, as_state_dict=True).state_dict


def _layers_record(chosen: Mapping[str, Option]) -> dict[str, float]:
    return {name: float(f"{o.loss:.6g}") for name, o in chosen.items() if o.plan.storage != "raw" or o.loss > 0}


def _margin_text(evaluation: Evaluation, budget: AccuracyBudget) -> str:
    if not evaluation.se or budget.z == 0:
        return ""
    return (f", {evaluation.bound(budget.z):.3g} with its margin of {budget.z:.2g} standard errors "
            f"({evaluation.se:.2g} points each; confidence {budget.confidence:g})")


def _record(analysis: Analysis, budget, *, objective: str, met: bool, chosen: Mapping[str, Option],
            reference: float | None, score: float | None, started: float, drop_se: float | None = None) -> PlanRecord:
    limit = budget.max_drop if objective == "max-drop" else budget.target_bytes
    loss = sum(o.loss for o in chosen.values())
    has_score = budget.score is not None
    return PlanRecord(
        method=analysis.sensitivity.method, objective=objective, budget=limit, met=met,
        calibration=budget.description if has_score or budget.description else None,
        calibration_samples=budget.samples if has_score else None,
        reference_score=_rounded(reference), score=_rounded(score), predicted_loss=float(f"{loss:.6g}"),
        candidates=analysis.candidates, seconds=round(time.perf_counter() - started, 1),
        layers=_layers_record(chosen), drop_se=_rounded(drop_se),
        confidence=budget.confidence if drop_se is not None else None)


def _rounded(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


class _Scorer:
    """Scores frontier points by assembling, decoding and scoring their real file (cached per point)."""

    def __init__(self, analysis: Analysis, score: Score, reference: float, log: Log | None,
                 reference_samples: np.ndarray | None = None, z: float = 0.0):
        self.analysis, self.score, self.reference, self.log = analysis, score, reference, log
        self.reference_samples, self.z = reference_samples, z
        self.done: dict[int, Evaluation] = {}

    def __call__(self, index: int) -> Evaluation:
        if index in self.done:
            return self.done[index]
        started = time.perf_counter()
        point = self.analysis.front.points[index]
        key = (self.score, index)  # the callable itself: holding it keeps its identity unique
        if key in self.analysis.scored:
            size, value, samples, seconds = self.analysis.scored[key]
        else:
            result = assemble(self.analysis, self.analysis.choose(point))
            value, samples = split_score(self.score(decode_state_dict(result.data, self.analysis.config)))
            size, seconds = result.report.total_bytes, time.perf_counter() - started
            self.analysis.scored[key] = (size, value, samples, seconds)
        se = paired_se(self.reference_samples, samples)
        evaluation = Evaluation(index, size, point.loss, value, self.reference - value, seconds, se)
        self.done[index] = evaluation
        if self.log:
            noise = "" if se is None else f" +- {se:.3f}"
            self.log(f"point {index}/{len(self.analysis.front.points) - 1}: {evaluation.bytes:,} B, predicted loss "
                     f"{point.loss:.4g}, score {value:.3f} (drop {evaluation.drop:+.3f}{noise})")
        return evaluation


def search_accuracy(analysis: Analysis, budget: AccuracyBudget, *, reference: float, log: Log | None = None,
                    reference_samples: np.ndarray | None = None, max_evaluations: int = DEFAULT_MAX_EVALUATIONS,
                    tolerance: float = DEFAULT_BYTES_TOLERANCE) -> tuple[int | None, list[Evaluation]]:
    """The cheapest frontier index whose measured drop (plus its margin, ``z * se``, with per-sample
    scores) is within the budget (None if even the most accurate point misses it), and every
    evaluation made."""
    points = analysis.front.points
    z = budget.z
    scorer = _Scorer(analysis, budget.score, reference, log, reference_samples, z)
    top = len(points) - 1
    passes = lambda e: e.bound(z) <= budget.max_drop  # noqa: E731
    if not passes(scorer(top)):
        return None, list(scorer.done.values())
    good, bad = top, None
    if passes(scorer(0)):
        return 0, list(scorer.done.values())
    bad = 0
    for _ in range(max_evaluations):
        lo_loss, hi_loss = points[good].loss, points[bad].loss
        if points[bad].bytes >= (1 - tolerance) * points[good].bytes or good - bad <= 1:
            break
        # geometric mean of the predicted losses (they span decades), as an index between the two
        target = math.exp(0.5 * (math.log(max(lo_loss, 1e-30)) + math.log(max(hi_loss, 1e-30))))
        mid = analysis.front.index_for_loss(target)
        if not bad < mid < good:
            mid = (bad + good) // 2
        if passes(scorer(mid)):
            good = mid
        else:
            bad = mid
    return good, list(scorer.done.values())


def encode_to_budget(
    source,
    output: str | Path | None = None,
    *,
    budget: AccuracyBudget | SizeBudget | None = None,
    max_drop: float | None = None,
    target_bytes: int | None = None,
    score: Score | None = None,
    sensitivity: Sensitivity | None = None,
    config: EncodeConfig | None = None,
    space: SearchSpace | None = None,
    analysis: Analysis | None = None,
    best_effort: bool = False,
    trust_pickle: bool = False,
    workers: int | None = None,
    metadata: Mapping[str, str] | None = None,
    max_evaluations: int = DEFAULT_MAX_EVALUATIONS,
    progress: Progress | None = None,
    log: Log | None = None,
) -> BudgetResult:
    """Encode ``source`` with the fewest bytes that meet ``budget`` (or the least loss that fits it).

    ``budget`` is an :class:`AccuracyBudget` or a :class:`SizeBudget`; or give the shorthand
    ``max_drop=`` (or ``target_bytes=``) with an optional ``score=`` callable
    (``score(state_dict) -> float``, higher is better), e.g.
    ``encode_to_budget(model.state_dict(), "m.wcodec", max_drop=1.0, score=my_score)``.

    ``sensitivity`` prices each layer's error (default: :class:`~.sensitivity.DataFreeSensitivity`;
    with a model and calibration inputs use :meth:`~.sensitivity.FisherSensitivity.from_model`).
    ``analysis`` reuses the options measured by :func:`analyze` for another budget. ``output`` is
    written (atomically) only once the budget is met, or with ``best_effort`` the best file found.
    The library never prints: ``log`` receives one line per scored point.

    Raises:
        BudgetError: the budget cannot be met (and ``best_effort`` is off); nothing is written.
        ConfigError: invalid settings.
    """
    started = time.perf_counter()
    if budget is None:
        if (max_drop is None) == (target_bytes is None):
            raise ConfigError("give a budget: max_drop=POINTS or target_bytes=N (or budget=...)")
        budget = AccuracyBudget(max_drop=max_drop, score=score) if max_drop is not None else \
            SizeBudget(target_bytes=target_bytes, score=score)
    elif max_drop is not None or target_bytes is not None or score is not None:
        raise ConfigError("give either budget=... or max_drop/target_bytes/score, not both")
    if not isinstance(budget, (AccuracyBudget, SizeBudget)):
        raise ConfigError("budget must be an AccuracyBudget or a SizeBudget")
    if analysis is None:
        analysis = analyze(source, sensitivity=sensitivity, config=config, space=space, trust_pickle=trust_pickle,
                           workers=workers, progress=progress)
    notices: list[Notice] = []
    if budget.score is None and isinstance(budget, AccuracyBudget):
        notices.append(Notice("warning", "no calibration data: the data-free proxy (relative weight error per "
                                         "layer) chose the plan, so the accuracy drop is estimated, not measured; "
                                         "give calibration data (--arch and --calib-data) to measure it"))
    elif budget.score is None or analysis.sensitivity.method == "data-free":
        notices.append(Notice("note", "layer sensitivities come from the data-free proxy (relative weight error)"
                                      + ("; the drop is measured with the score" if budget.score else "")))
    reference, reference_samples = budget.reference, None
    if isinstance(reference, (np.ndarray, torch.Tensor, list, tuple)):
        reference, reference_samples = split_score(reference)
    if budget.score is not None and reference is None:
        reference, reference_samples = split_score(budget.score(analysis.loaded.state_dict))
    if isinstance(budget, SizeBudget):
        return _encode_to_size(analysis, budget, output, reference=reference, notices=notices, started=started,
                               metadata=metadata, log=log)

    evaluations: list[Evaluation] = []
    front = analysis.front
    drop_se = None
    if budget.score is None:
        index = front.index_for_loss(DATA_FREE_LOSS_PER_POINT * budget.max_drop)
        met = True
        score_value = None
    else:
        index, evaluations = search_accuracy(analysis, budget, reference=reference, log=log,
                                             reference_samples=reference_samples, max_evaluations=max_evaluations)
        met = index is not None
        if not met:
            best = min(evaluations, key=lambda e: e.bound(budget.z))
            if not best_effort:
                raise BudgetError(
                    f"a drop of at most {budget.max_drop:g} cannot be met: even with every quantized layer at "
                    f"int8 the score drops by {best.drop:.3g} ({reference:.4g} -> {best.score:.4g})"
                    + _margin_text(best, budget) + "; nothing was written (raise the budget, give more calibration "
                    "data, or pass --best-effort to write the most accurate file)")
            index = best.index
            notices.append(Notice("warning", f"best effort: the budget of {budget.max_drop:g} is not met; the most "
                                             f"accurate file found drops the score by {best.drop:.3g}"
                                             + _margin_text(best, budget)))
        chosen_evaluation = next(e for e in evaluations if e.index == index)
        score_value, drop_se = chosen_evaluation.score, chosen_evaluation.se
        if met and drop_se is not None and drop_se > 0.5 * budget.max_drop:
            notices.append(Notice("warning", f"the measured drop, {chosen_evaluation.drop:.3g}, has a standard error of "
                                             f"{drop_se:.2g} points on {reference_samples.size} samples, more than half "
                                             "the budget: more calibration data would let the search keep fewer bytes"))
    chosen = front.options(front.points[index])
    record = _record(analysis, budget, objective="max-drop", met=met, chosen=chosen, reference=reference,
                     score=score_value, started=started, drop_se=drop_se)
    result = assemble(analysis, chosen, record=record, notices=notices, metadata=metadata)
    return BudgetResult(_finish(result, output, started), record, chosen, evaluations, reference, notices)


def _finish(result: EncodeResult, output, started: float) -> EncodeResult:
    """Write the file (atomically) once it is known to be the answer; the report's time is the whole search."""
    result = replace(result, report=replace(result.report, seconds=time.perf_counter() - started))
    if output is None:
        return result
    atomic_write(output, [result.data])
    return replace(result, path=Path(output))


def _encode_to_size(analysis: Analysis, budget: SizeBudget, output, *, reference, notices, started, metadata,
                    log) -> BudgetResult:
    front = analysis.front
    cheapest = front.options(front.cheapest)
    probe = assemble(analysis, cheapest, record=_record(analysis, budget, objective="target-size", met=True,
                                                        chosen=cheapest, reference=reference, score=reference,
                                                        started=started))
    if probe.report.total_bytes > budget.target_bytes:
        raise BudgetError(f"target size {budget.target_bytes:,} B is below the smallest file the search can make, "
                          f"{probe.report.total_bytes:,} B (every layer at its cheapest option); nothing was written")
    # the file = payload + prefix, header (with the plan record) and skeleton: measured, then corrected
    payload_budget = budget.target_bytes - (probe.report.total_bytes - front.cheapest.bytes)
    evaluations: list[Evaluation] = []
    for _ in range(6):
        index = front.index_for_bytes(payload_budget)
        chosen = fill(front, front.points[index if index is not None else 0], payload_budget)
        score_value = None
        if budget.score is not None:
            data = assemble(analysis, chosen).data
            score_value = split_score(budget.score(decode_state_dict(data, analysis.config)))[0]
            evaluations.append(Evaluation(-1, len(data), sum(o.loss for o in chosen.values()), score_value,
                                          reference - score_value))
            if log:
                log(f"{len(data):,} B: score {score_value:.3f} (drop {reference - score_value:+.3f})")
        record = _record(analysis, budget, objective="target-size", met=True, chosen=chosen, reference=reference,
                         score=score_value, started=started)
        result = assemble(analysis, chosen, record=record, notices=notices, metadata=metadata)
        over = result.report.total_bytes - budget.target_bytes
        if over <= 0:
            return BudgetResult(_finish(result, output, started), record, chosen, evaluations, reference, notices)
        payload_budget -= over
    raise BudgetError(f"could not fit {budget.target_bytes:,} B: the file came to {result.report.total_bytes:,} B; "
                      "nothing was written")


__all__ = ["AccuracyBudget", "Analysis", "BudgetResult", "DATA_FREE_LOSS_PER_POINT", "DEFAULT_CONFIDENCE", "Evaluation",
           "SizeBudget", "analyze", "assemble", "build_plan", "encode_to_budget", "paired_se", "split_score",
           "search_accuracy"]
