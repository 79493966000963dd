"""Whole models at the fewest bytes for their accuracy: every layer's storage chosen by measured
rate and sensitivity, to a stated budget.

::

    from weightcodec.allocation import AccuracyBudget, FisherSensitivity, encode_to_budget

    sensitivity = FisherSensitivity.from_model(model, calibration_batches, max_samples=256)
    result = encode_to_budget(model.state_dict(), "model.wcodec",
                              budget=AccuracyBudget(max_drop=1.0, score=my_score),
                              sensitivity=sensitivity)

``my_score(state_dict) -> float`` is any score where higher is better (top-1 in percent, minus a
perplexity...), measured on calibration data. Without a score the data-free proxy decides and the
result says so; ``SizeBudget(target_bytes=...)`` fits a size instead (``wcodec encode
--target-size``). ``wcodec encode --arch NAME --calib-data DIR --max-drop POINTS`` does the same
from the command line for the models of the registry (:mod:`weightcodec.evaluation.calibration`).

Modules: :mod:`.candidates` (the options of each tensor, coded and decoded for real),
:mod:`.sensitivity` (Fisher and data-free loss models), :mod:`.solver` (the convex-hull /
Lagrangian frontier), :mod:`.budget` (the search against the real score, the plan record).
"""

from .budget import (
    DATA_FREE_LOSS_PER_POINT,
    AccuracyBudget,
    Analysis,
    BudgetResult,
    Evaluation,
    SizeBudget,
    analyze,
    assemble,
    encode_to_budget,
    search_accuracy,
)
from .candidates import DEFAULT_QPS, Option, SearchSpace, TensorOptions, measure_options
from .sensitivity import DataFreeSensitivity, FisherSensitivity, Sensitivity, float16_fits
from .solver import Frontier, Point, frontier, lower_hull

__all__ = [
    "DATA_FREE_LOSS_PER_POINT", "DEFAULT_QPS", "AccuracyBudget", "Analysis", "BudgetResult", "DataFreeSensitivity",
    "Evaluation", "FisherSensitivity", "Frontier", "Option", "Point", "SearchSpace", "Sensitivity", "SizeBudget",
    "TensorOptions", "analyze", "assemble", "encode_to_budget", "float16_fits", "frontier", "lower_hull",
    "measure_options", "search_accuracy",
]
