"""Accuracy and size of a model against the guard threshold (docs/QUANTIZATION.md).

For each threshold (``auto`` granularity, the same threshold for conv and 2-D weights) and for
forced ``per-channel``, encodes the model twice,
int8-only and with HEVC at ``--qp``, decodes and evaluates, and writes one JSON record per run.

    python -m tools.guard_study --model mobilenet_v2 --thresholds 0,25,30,33,35,38,40 \
        --out docs/data/guard_mobilenet_v2.json
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from weightcodec import api
from weightcodec.config import build_encode_config
from weightcodec.errors import WeightcodecError
from weightcodec.evaluation import Evaluator
from weightcodec.atomic import atomic_write


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "spec", default="mobilenet_v2", show_default=True,
              help="Model name (weightcodec.evaluation.zoo).")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="Weights (default: the model's own).")
@click.option("--thresholds", default="0,25,30,33,35,38,40", show_default=True,
              help="Comma-separated guard thresholds in dB; 'per-channel' forces per-channel everywhere.")
@click.option("--qp", type=click.IntRange(0, 51), default=28, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate on the first N samples only.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="JSON output.")
def main(spec, weights, thresholds, qp, limit, out):
    """Guard threshold study: top-1/top-5 and bytes per threshold."""
    try:
        evaluator = Evaluator.create(spec, weights=weights, limit=limit)
        source = evaluator.reference_state_dict()
        records = [{"run": "float32", **evaluator.score()}]
        click.echo(json.dumps(records[-1]), err=True)
        for item in thresholds.split(","):
            granularity = "per-channel" if item == "per-channel" else "auto"
            try:
                guard_db = 30.0 if granularity == "per-channel" else float(item)
            except ValueError:
                raise click.BadParameter(f"{item!r} is neither a number of dB nor 'per-channel'",
                                         param_hint="--thresholds") from None
            for coded in (False, True):
                config = build_encode_config(qp=qp, int8_only=not coded, granularity=granularity, guard_db=guard_db,
                                             matrix_guard_db=guard_db)
                encoded = api.encode(source, config=config)
                decoded = api.decode(encoded.data, as_state_dict=True)
                per_channel = [layer.name for layer in encoded.report.layers if layer.granularity == "per-channel"]
                records.append({"run": "int8 only" if not coded else f"QP {qp}", "granularity": granularity,
                                "guard_db": guard_db if granularity == "auto" else None,
                                "bytes": encoded.report.total_bytes, "per_channel_layers": len(per_channel),
                                **evaluator.score(decoded.state_dict)})
                click.echo(json.dumps(records[-1]), err=True)
    except WeightcodecError as exc:
        raise click.ClickException(str(exc)) from None
    result = {"model": spec, "dataset": evaluator.dataset, "preprocessing": evaluator.preprocessing,
              "qp": qp, "records": records}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, [(json.dumps(result, indent=1) + "\n").encode()])


if __name__ == "__main__":
    main()
