"""Settings, as frozen dataclasses validated on construction.

Every option is keyword-only; an invalid value raises :class:`~weightcodec.errors.ConfigError`
naming the field, so a bad ``--qp`` never reaches the encoder.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from .errors import ConfigError
from .policy import POLICIES, TransformerPolicy

GRANULARITIES = ("per-tensor", "per-channel", "auto")
CHROMA_FORMATS = ("yuv420p", "gray")
X265_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast",
    "medium", "slow", "slower", "veryslow", "placebo",
)
QP_RANGE = (0, 51)

#: x265 settings chosen for weights, not for eyes (measured in docs/ENCODER.md):
#: no psycho-visual tuning, intra-only, the QP the user asked
#: for is the QP in the bitstream (``ipratio=1`` cancels x265's I-frame offset of -3), and no SEI
#: text block of the settings (``info=0``, ~2.3 kB per stream otherwise). Every picture is an intra
#: picture, forced per frame by the backends: ``keyint=1`` would do the same but makes x265 signal
#: a Range Extensions "Main Intra" profile, which phone hardware decoders refuse; forcing I frames
#: keeps the stream in the plain Main profile. ``aq-mode=0`` and ``cutree=0`` are no-ops in
#: constant-QP mode (x265 forces both off itself); they are kept so that a rate-controlled
#: ``extra_x265_params`` run cannot silently turn them back on.
WEIGHT_X265_PARAMS: tuple[tuple[str, str], ...] = (
    ("aq-mode", "0"),
    ("psy-rd", "0"),
    ("psy-rdoq", "0"),
    ("cutree", "0"),
    ("ipratio", "1"),
    ("scenecut", "0"),
    ("bframes", "0"),
    ("rdoq-level", "2"),
    ("info", "0"),
    ("log-level", "error"),
)

#: Encoder effort levels: ``(x265 preset, x265 params on top of WEIGHT_X265_PARAMS)``, measured
#: in docs/ENCODER.md section 9 (encode MB per CPU second against bits at equal int8 RMSE, by
#: ``tools/measure_speed.py``; data in docs/data/encoder_speed.json). Against the old default
#: (preset medium, 8x8 CUs, rd=3):
#:
#: * ``default``: medium with ``min-cu-size=16`` (no 8x8 CUs or 4x4 intra blocks) and ``rd=2``:
#:   3.05x the encode speed per core, +1.2 % bits at equal int8 RMSE on average (+0.4 % pooled);
#:   matrices under :data:`SMALL_MATRIX_WEIGHTS` keep 8x8 CUs (``rd=2`` only: +0.0 %), because
#:   there 16x16 CUs cost most (+4.9 % on MNIST's 500x784 layer) and save little time in all;
#: * ``fast``: medium with ``min-cu-size=32``: 5.6x the speed, +2.3 % bits (x265's ultrafast is
#:   slower and bigger: 4.1x, +3.8 %);
#: * ``max``: preset veryslow: 0.66x the speed, -0.2 % bits (the smallest setting measured).
EFFORTS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "fast": ("medium", (("min-cu-size", "32"),)),
    "default": ("medium", (("rd", "2"), ("min-cu-size", "16"))),
    "max": ("veryslow", ()),
}
DEFAULT_EFFORT = "default"
#: Under this many weights a matrix coded with the ``default`` effort keeps x265's 8x8 CUs.
SMALL_MATRIX_WEIGHTS = 1 << 19
#: What the ``default`` effort changes for small matrices.
SMALL_MATRIX_PARAMS: tuple[tuple[str, str], ...] = (("min-cu-size", "8"),)

#: Guard thresholds: when the median output channel's SQNR under per-tensor int8 is below this
#: many dB, the ``auto`` granularity switches the layer to per-channel. Convolution weights (more
#: than two dimensions) use ``DEFAULT_GUARD_SQNR_DB``; 2-D weights (Linear, embeddings: the
#: matrices HEVC codes) use the lower ``DEFAULT_MATRIX_GUARD_SQNR_DB``: their per-channel SQNR is
#: low for a benign reason (peaky rows, e.g. an MLP's first layer over image pixels), HEVC's own
#: error dominates int8 rounding there, and per-channel scales cost bits (2.5x HEVC bytes on the
#: MNIST MLP's l1 at QP 28, +23 % zstd bytes on the digits MLP's 512x512 layer).
#: See docs/QUANTIZATION.md for the measurements behind the numbers.
DEFAULT_GUARD_SQNR_DB = 38.0
DEFAULT_MATRIX_GUARD_SQNR_DB = 30.0

#: ``--max-drop`` with per-sample scores: one-sided confidence that the drop on images like the
#: calibration ones is within the budget (a margin of z = 0.84 standard errors of the measured drop;
#: weightcodec.allocation.budget). Checked on held-out images in docs/RESULTS.md.
DEFAULT_CONFIDENCE = 0.8


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_qp(qp: object, what: str = "qp") -> None:
    _check(
        isinstance(qp, int) and not isinstance(qp, bool) and QP_RANGE[0] <= qp <= QP_RANGE[1],
        f"{what} must be an integer from {QP_RANGE[0]} to {QP_RANGE[1]}, got {qp!r}",
    )


@dataclass(frozen=True, kw_only=True)
class HevcSettings:
    """How 2-D weight matrices are coded as HEVC frames.

    ``effort`` picks an x265 preset and parameters from :data:`EFFORTS`; ``preset`` (None: the
    effort's) overrides its preset, ``extra_x265_params`` add to or override its parameters.
    """

    qp: int = 28
    lossless: bool = False
    chroma: str = "yuv420p"
    effort: str = DEFAULT_EFFORT
    preset: str | None = None
    max_tile_width: int = 4096
    max_tile_height: int = 2160
    extra_x265_params: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _check_qp(self.qp)
        _check(self.chroma in CHROMA_FORMATS, f"chroma must be one of {CHROMA_FORMATS}, got {self.chroma!r}")
        _check(self.effort in EFFORTS, f"effort must be one of {tuple(EFFORTS)}, got {self.effort!r}")
        if self.preset is None:
            object.__setattr__(self, "preset", EFFORTS[self.effort][0])
        _check(self.preset in X265_PRESETS, f"preset must be one of {X265_PRESETS}, got {self.preset!r}")
        for name in ("max_tile_width", "max_tile_height"):
            value = getattr(self, name)
            _check(
                isinstance(value, int) and 16 <= value <= 16384 and value % 2 == 0,
                f"{name} must be an even integer from 16 to 16384, got {value!r}",
            )
        for item in self.extra_x265_params:
            _check(
                isinstance(item, tuple) and len(item) == 2 and all(isinstance(s, str) and s for s in item)
                and not any(c in s for s in item for c in ":="),
                f"extra_x265_params entries must be (key, value) strings without ':' or '=', got {item!r}",
            )

    def for_matrix(self, weights: int) -> "HevcSettings":
        """The settings for one matrix of ``weights`` weights: with the ``default`` effort, small
        matrices keep 8x8 CUs (see :data:`EFFORTS`); the user's ``extra_x265_params`` still win."""
        if self.effort != "default" or weights >= SMALL_MATRIX_WEIGHTS:
            return self
        return HevcSettings(**{**self.__dict__, "extra_x265_params": SMALL_MATRIX_PARAMS + self.extra_x265_params})

    def x265_params(self) -> str:
        """The ``x265-params`` string both backends pass to libx265."""
        params = dict(WEIGHT_X265_PARAMS)
        params.update(EFFORTS[self.effort][1])
        params.update(self.extra_x265_params)
        if self.lossless:
            params["lossless"] = "1"
        else:
            params["qp"] = str(self.qp)
        return ":".join(f"{k}={v}" for k, v in params.items())


@dataclass(frozen=True, kw_only=True)
class QuantSettings:
    """Symmetric int8 quantization of weight tensors."""

    granularity: str = "auto"
    guard_db: float = DEFAULT_GUARD_SQNR_DB
    matrix_guard_db: float = DEFAULT_MATRIX_GUARD_SQNR_DB

    def __post_init__(self) -> None:
        _check(self.granularity in GRANULARITIES,
               f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        for name in ("guard_db", "matrix_guard_db"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and 0 <= value <= 100,
                   f"{name} must be a number of dB from 0 to 100, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class EncodeConfig:
    """Everything :func:`weightcodec.api.encode` needs to know.

    The storage rule (which tensors are quantized, which of those are HEVC-coded; see
    :func:`weightcodec.plan.storage_kind`) is the four fields ``min_quantized_elements``,
    ``min_coded_elements``, ``code_matrices`` and ``code_conv``.

    ``layer_qp`` and ``layer_granularity`` are ``(pattern, value)`` pairs; the pattern is an
    fnmatch glob over tensor names (``"features.*"``, ``"classifier.1.weight"``), and the last
    matching pair wins.
    """

    hevc: HevcSettings = field(default_factory=HevcSettings)
    quant: QuantSettings = field(default_factory=QuantSettings)
    backend: str = "pyav"
    code_matrices: bool = True
    code_conv: bool = False
    min_quantized_elements: int = 256
    min_coded_elements: int = 4096
    compress_raw: bool = True
    zstd_level: int = 19
    layer_qp: tuple[tuple[str, int], ...] = ()
    layer_granularity: tuple[tuple[str, str], ...] = ()
    #: "auto": the Transformer policy for models that look like Transformers (weightcodec.policy),
    #: the classic one (``hevc.qp`` everywhere, ``quant.granularity``) for the rest.
    policy: str = "auto"
    transformer: TransformerPolicy = field(default_factory=TransformerPolicy)

    def __post_init__(self) -> None:
        _check(isinstance(self.hevc, HevcSettings), "hevc must be a HevcSettings")
        _check(isinstance(self.quant, QuantSettings), "quant must be a QuantSettings")
        _check(self.policy in POLICIES, f"policy must be one of {POLICIES}, got {self.policy!r}")
        _check(isinstance(self.transformer, TransformerPolicy), "transformer must be a TransformerPolicy")
        for name in ("min_quantized_elements", "min_coded_elements"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                   f"{name} must be a positive integer, got {value!r}")
        _check(isinstance(self.zstd_level, int) and 1 <= self.zstd_level <= 22,
               f"zstd_level must be an integer from 1 to 22, got {self.zstd_level!r}")
        for pattern, qp in self.layer_qp:
            _check(isinstance(pattern, str) and pattern, f"layer_qp pattern must be a non-empty string, got {pattern!r}")
            _check_qp(qp, f"qp for layers matching {pattern!r}")
        for pattern, granularity in self.layer_granularity:
            _check(isinstance(pattern, str) and pattern,
                   f"layer_granularity pattern must be a non-empty string, got {pattern!r}")
            _check(granularity in GRANULARITIES,
                   f"granularity for layers matching {pattern!r} must be one of {GRANULARITIES}, got {granularity!r}")

    def hevc_for(self, name: str) -> HevcSettings:
        """The HEVC settings for one tensor, after per-layer QP overrides."""
        qp = _last_match(self.layer_qp, name, self.hevc.qp)
        if qp == self.hevc.qp:
            return self.hevc
        return HevcSettings(**{**self.hevc.__dict__, "qp": qp})

    def granularity_for(self, name: str) -> str:
        return _last_match(self.layer_granularity, name, self.quant.granularity)


def _last_match(pairs, name, default):
    value = default
    for pattern, candidate in pairs:
        if fnmatch.fnmatchcase(name, pattern):
            value = candidate
    return value


def parse_assignment(text: str, *, value_name: str) -> tuple[str, str]:
    """Split ``"PATTERN=VALUE"`` (used by the CLI's per-layer options)."""
    pattern, sep, value = text.rpartition("=")
    if not sep or not pattern or not value:
        raise ConfigError(f"expected PATTERN={value_name}, got {text!r}")
    return pattern, value


def parse_tile_size(text: str) -> tuple[int, int]:
    """``"4096x2160"`` -> ``(4096, 2160)`` (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--max-tile must look like 4096x2160, got {text!r}") from None
    return width, height


def build_encode_config(
    *,
    qp: int | None = None,
    policy: str = "auto",
    lossless: bool = False,
    layer_qp: tuple[str, ...] = (),
    granularity: str = "auto",
    layer_granularity: tuple[str, ...] = (),
    guard_db: float = DEFAULT_GUARD_SQNR_DB,
    matrix_guard_db: float = DEFAULT_MATRIX_GUARD_SQNR_DB,
    chroma: str = "yuv420p",
    effort: str = DEFAULT_EFFORT,
    preset: str | None = None,
    max_tile: str = "4096x2160",
    code_conv: bool = False,
    int8_only: bool = False,
    no_zstd: bool = False,
    backend: str = "pyav",
) -> EncodeConfig:
    """The one place where command-line style options become an :class:`EncodeConfig`.

    Every option has the meaning (and the spelling, with ``-`` as ``_``) of ``wcodec encode``'s;
    ``layer_qp`` and ``layer_granularity`` take ``"PATTERN=VALUE"`` strings. ``qp=None`` is the
    default: QP 28 for classic models, a QP per tensor from the fidelity targets for Transformers;
    a given ``qp`` is used for every coded matrix of either. ``wcodec encode`` and
    the tools (``tools/sweep.py`` ...) build their configs here, so the same options mean the same
    encode everywhere.

    Raises:
        ConfigError: for any invalid option, naming it.
    """
    width, height = parse_tile_size(max_tile)
    layer_qps = []
    for item in layer_qp:
        pattern, value = parse_assignment(item, value_name="QP")
        try:
            layer_qps.append((pattern, int(value)))
        except ValueError:
            raise ConfigError(f"--layer-qp {item!r}: QP must be an integer from 0 to 51") from None
    layer_gran = tuple(parse_assignment(item, value_name="GRANULARITY") for item in layer_granularity)
    return EncodeConfig(
        policy=policy, transformer=TransformerPolicy(qp=qp),
        hevc=HevcSettings(qp=28 if qp is None else qp, lossless=lossless, chroma=chroma, effort=effort, preset=preset,
                          max_tile_width=width, max_tile_height=height),
        quant=QuantSettings(granularity=granularity, guard_db=guard_db, matrix_guard_db=matrix_guard_db),
        backend=backend, code_conv=code_conv, code_matrices=not int8_only, compress_raw=not no_zstd,
        layer_qp=tuple(layer_qps), layer_granularity=layer_gran,
    )
