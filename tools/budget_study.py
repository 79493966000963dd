"""One QP for all layers against per-layer QPs under the same size budget (``--target-size``).

For each uniform QP, the budget is the size of the uniform-QP file; the allocator
(:mod:`weightcodec.allocate`) then picks a QP per coded layer within it. Both are decoded and
scored with the shared Evaluator. Writes JSON and a markdown table.

    python -m tools.budget_study --model mnist-mlp --qps 30,32,34,36 --out docs/data/budget_mnist-mlp
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from weightcodec import api
from weightcodec.allocate import encode_to_size
from weightcodec.config import build_encode_config
from weightcodec.errors import WeightcodecError
from weightcodec.evaluation import Evaluator
from weightcodec.atomic import atomic_write


def _qps(text: str) -> list[int]:
    try:
        return [int(q) for q in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint="--qps") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "spec", required=True, help="Model name (weightcodec.evaluation.zoo).")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="Weights (default: the model's own).")
@click.option("--qps", default="30,32,34,36", show_default=True, help="Uniform QPs whose sizes are the budgets.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for budget.json and budget.md.")
def main(spec, weights, qps, out):
    """Uniform QP vs per-layer QPs at equal size: top-1 of each."""
    try:
        evaluator = Evaluator.create(spec, weights=weights)
        source = evaluator.reference_state_dict()
        rows = []
        for qp in _qps(qps):
            uniform = api.encode(source, config=build_encode_config(qp=qp))
            target = uniform.report.total_bytes
            budgeted, allocation = encode_to_size(source, target_bytes=target)
            rows.append({
                "uniform_qp": qp, "target_bytes": target,
                "uniform": {"bytes": target, **evaluator.score(api.decode(uniform.data, as_state_dict=True).state_dict)},
                "per_layer": {"bytes": budgeted.report.total_bytes, "layer_qp": allocation.layer_qp,
                              **evaluator.score(api.decode(budgeted.data, as_state_dict=True).state_dict)},
            })
            click.echo(json.dumps(rows[-1]), err=True)
    except WeightcodecError as exc:
        raise click.ClickException(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    document = json.dumps({"model": spec, "rows": rows}, indent=1, sort_keys=True) + "\n"
    atomic_write(out / "budget.json", [document.encode()])
    lines = ["| budget (= uniform QP file) | uniform QP: top-1 | per-layer QPs | bytes | top-1 |", "|---|---|---|---|---|"]
    for r in rows:
        qps_text = ", ".join(f"`{n}` {q}" for n, q in r["per_layer"]["layer_qp"].items())
        lines.append(f"| {r['target_bytes']:,} B (QP {r['uniform_qp']}) | {r['uniform']['top1']:.2f} | {qps_text} "
                     f"| {r['per_layer']['bytes']:,} | {r['per_layer']['top1']:.2f} |")
    atomic_write(out / "budget.md", [("\n".join(lines) + "\n").encode()])
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
