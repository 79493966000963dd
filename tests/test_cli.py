"""``wcodec`` end to end, as a user runs it: encode, info, decode, then torch alone loads the result."""

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from weightcodec.cli import main
from weightcodec.quant import quantize


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, 10))
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    return path


def test_encode_info_decode_and_forward_without_weightcodec(runner, model_file, tmp_path):
    result = runner.invoke(main, ["encode", str(model_file), "--qp", "22"])
    assert result.exit_code == 0, result.output
    assert "per-layer summary" in result.output and "hevc" in result.output and "wrote" in result.output
    packed = model_file.with_suffix(".wcodec")
    assert packed.exists() and packed.stat().st_size < model_file.stat().st_size / 3

    info = runner.invoke(main, ["info", str(packed)])
    assert info.exit_code == 0 and "Main @ L" in info.output and "4:2:0" in info.output and "2.weight" in info.output
    info_json = json.loads(runner.invoke(main, ["info", str(packed), "--json"]).output)
    assert info_json["format_version"] == [2, 0] and len(info_json["tensors"]) == 6

    restored = tmp_path / "restored.pt"
    result = runner.invoke(main, ["decode", str(packed), "-o", str(restored)])
    assert result.exit_code == 0, result.output

    # the restored file loads with plain torch (no weightcodec import) and runs a forward pass that
    # matches the int8-dequantized original within tolerance
    script = (
        "import sys, torch\n"
        "sd = torch.load(sys.argv[1], weights_only=True)\n"
        "m = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),"
        " torch.nn.ReLU(), torch.nn.Linear(128, 10))\n"
        "m.load_state_dict(sd)\n"
        "torch.manual_seed(1)\n"
        "print(repr(m(torch.randn(4, 64)).tolist()))\n"
        "assert 'weightcodec' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(restored)], capture_output=True, text=True, check=True)
    out = torch.tensor(eval(proc.stdout))  # noqa: S307 - our own subprocess output
    original = torch.load(model_file, weights_only=True)
    reference = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                    torch.nn.ReLU(), torch.nn.Linear(128, 10))
    reference.load_state_dict({k: torch.from_numpy(quantize(v.numpy()).dequantize()) if k.endswith("weight") else v
                               for k, v in original.items()})
    torch.manual_seed(1)
    expected = reference(torch.randn(4, 64))
    scale = expected.abs().max()
    assert (out - expected).abs().max() < 0.05 * scale  # QP 22 HEVC error on top of int8
    assert not torch.equal(out, expected)


def test_pickled_module_round_trip_through_the_cli(runner, tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh())
    path = tmp_path / "module.pt"
    torch.save(model, path)
    refused = runner.invoke(main, ["encode", str(path)])
    assert refused.exit_code == 1 and "--trust-pickle" in refused.output and "Traceback" not in refused.output
    assert runner.invoke(main, ["encode", str(path), "--trust-pickle", "--lossless"]).exit_code == 0
    out = tmp_path / "module_out.pt"
    result = runner.invoke(main, ["decode", str(path.with_suffix(".wcodec")), "-o", str(out), "--trust-pickle"])
    assert result.exit_code == 0, result.output
    restored = torch.load(out, weights_only=False)
    assert isinstance(restored, torch.nn.Sequential) and restored[0].weight.shape == (128, 64)


@pytest.mark.parametrize(
    "args, message",
    [
        (["encode", "{model}", "--qp", "52"], "52 is not in the range 0<=x<=51"),
        (["encode", "{model}", "--qp", "abc"], "not a valid integer"),
        (["encode", "{missing}"], "no such file"),
        (["encode", "{text}"], "not a PyTorch model file"),
        (["encode", "{model}", "-o", "{tmp}/no/such/dir/x.wcodec"], "does not exist"),
        (["encode", "{model}", "--layer-qp", "fc*"], "expected PATTERN=QP"),
        (["encode", "{model}", "--layer-qp", "fc*=70"], "from 0 to 51"),
        (["encode", "{model}", "--max-tile", "10x10"], "max_tile_width"),
        (["info", "{text}"], "not a wcodec file"),
        (["info", "{missing}"], "no such file"),
        (["decode", "{text}", "-o", "{tmp}/o.pt"], "not a wcodec file"),
        (["info", "{model}"], "looks like a PyTorch file: compress it with `wcodec encode"),
        (["encode", "{tmp}"], "holds no model weights: expected model.safetensors"),
        (["encode", "{model}", "--layer-qp", "nomatch*=20"], "matches no tensor of the model"),
        (["encode", "{model}", "--layer-qp", "0.weigth=20"], "did you mean '0.weight'"),
        (["encode", "{model}", "--layer-granularity", "[=per-channel"], "matches no tensor"),
        (["encode", "{model}", "-o", "/dev/null", "-f"], "not a regular file"),
    ],
)
def test_user_mistakes_give_one_clear_line_and_nonzero_exit(runner, model_file, tmp_path, args, message):
    text = tmp_path / "text.pt"
    text.write_text("hello")
    fmt = dict(model=model_file, missing=tmp_path / "missing.pt", text=text, tmp=tmp_path)
    result = runner.invoke(main, [a.format(**fmt) for a in args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)


def test_wcodec_given_to_encode_and_decode_limits(runner, model_file, tmp_path):
    assert runner.invoke(main, ["encode", str(model_file), "-q"]).exit_code == 0
    packed = model_file.with_suffix(".wcodec")
    again = runner.invoke(main, ["encode", str(packed), "-q"])
    assert again.exit_code == 1 and "already a .wcodec file" in again.output and "wcodec decode" in again.output
    assert "--trust-pickle" not in again.output
    refused = runner.invoke(main, ["decode", str(packed), "-o", str(tmp_path / "o.pt"), "--max-output-size", "10k"])
    assert refused.exit_code == 1 and "more than the limit of 10,000 bytes" in refused.output
    assert not (tmp_path / "o.pt").exists()
    ok = runner.invoke(main, ["decode", str(packed), "-o", str(tmp_path / "o.pt"), "--max-output-size", "1M"])
    assert ok.exit_code == 0, ok.output


def test_layer_qp_on_uncoded_tensors_warns(runner, model_file):
    result = runner.invoke(main, ["encode", str(model_file), "-q", "--layer-qp", "*.bias=20", "--json"])
    assert result.exit_code == 0
    notices = json.loads(result.stdout)["notices"]
    assert any("'*.bias'" in n["message"] and n["level"] == "warning" for n in notices)


def test_existing_output_needs_force(runner, model_file):
    assert runner.invoke(main, ["encode", str(model_file), "-q"]).exit_code == 0
    again = runner.invoke(main, ["encode", str(model_file), "-q"])
    assert again.exit_code == 1 and "--force" in again.output
    assert runner.invoke(main, ["encode", str(model_file), "-q", "--force"]).exit_code == 0


def test_guard_warning_names_layer_and_remedy(runner, tmp_path):
    ranges = torch.logspace(-2, 0, 64)
    sd = {"dw.weight": (torch.rand(64, 1, 3, 3) * 2 - 1) * ranges[:, None, None, None]}
    path = tmp_path / "dw.pt"
    torch.save(sd, path)
    result = runner.invoke(main, ["encode", str(path), "--granularity", "per-tensor", "-q"])
    assert result.exit_code == 0
    assert "warning" in result.output and "dw.weight" in result.output and "--granularity auto" in result.output
    auto = runner.invoke(main, ["encode", str(path), "-q", "-f"])
    assert "switched to per-channel" in auto.output


def test_encode_json_report(runner, model_file):
    result = runner.invoke(main, ["encode", str(model_file), "--json", "--qp", "30"])
    doc = json.loads(result.stdout)
    coded = [layer for layer in doc["layers"] if layer["storage"] == "hevc"]
    assert coded and all(layer["qp"] == 30 and layer["profile"] == "Main" for layer in coded)
    assert doc["total_bytes"] == model_file.with_suffix(".wcodec").stat().st_size


def test_help_teaches(runner):
    for args in (["--help"], ["encode", "--help"], ["decode", "--help"], ["info", "--help"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0 and "Usage" in result.output
    assert "--trust-pickle" in runner.invoke(main, ["encode", "--help"]).output
