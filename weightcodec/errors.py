"""The one small hierarchy of errors weightcodec raises.

The library never prints or exits: every failure a user can cause is one of these, with a message
that names the problem in one line. The CLI turns them into that line and a non-zero exit code.
"""

from __future__ import annotations


class WeightcodecError(Exception):
    """Base class of every error weightcodec raises on purpose."""


# --- configuration and user input -------------------------------------------------------------
class ConfigError(WeightcodecError, ValueError):
    """A setting is out of range or inconsistent (e.g. ``qp=60``)."""


class ModelLoadError(WeightcodecError):
    """The input file is not a PyTorch model or state_dict we can read."""


class UntrustedPickleError(ModelLoadError):
    """The input needs full pickle loading (which can run code) and the caller did not allow it."""


class OutputError(WeightcodecError):
    """The output path cannot be written."""


class BudgetError(WeightcodecError):
    """An accuracy or size budget cannot be met (nothing is written)."""


# --- evaluation (model registry, data sets, scoring) ------------------------------------------
class EvaluationError(WeightcodecError):
    """A model spec, weights file or evaluation data set cannot be used (base of the cases below)."""


class UnknownModelError(EvaluationError, ValueError):
    """No model of that name is registered (and it is not a torchvision architecture)."""


class AssetNotFoundError(EvaluationError, FileNotFoundError):
    """A weights file, data set folder or shared asset is missing."""


class DatasetError(EvaluationError, ValueError):
    """An evaluation or calibration data set is malformed or does not fit the model."""


class ResourceLimitError(WeightcodecError):
    """Decoding would exceed a limit: the caller's ``max_output_bytes`` or the memory at hand."""


# --- codec backends ---------------------------------------------------------------------------
class BackendError(WeightcodecError):
    """A frame codec backend is unavailable or failed to encode/decode."""


class BackendUnavailableError(BackendError):
    """The backend's library or executable is not installed."""


# --- the container format ---------------------------------------------------------------------
class FormatError(WeightcodecError):
    """The bytes are not a valid ``.wcodec`` container (base class of the specific cases)."""


class NotAWcodecFileError(FormatError):
    """The file does not start with the ``.wcodec`` magic bytes."""


class UnsupportedVersionError(FormatError):
    """The container's major version is not one this reader implements."""


class TruncatedFileError(FormatError):
    """The file ends before the lengths its prefix declares."""


class HeaderTooLargeError(FormatError):
    """The declared header length exceeds the reader's cap."""


class ChecksumMismatchError(FormatError):
    """A header or payload segment does not match its CRC-32."""


class OffsetOutOfRangeError(FormatError):
    """A segment's byte range lies outside the payload or overlaps another segment."""


class UnknownCodecError(FormatError):
    """A tensor uses a storage kind, codec or compression this reader does not implement."""


class MalformedHeaderError(FormatError):
    """The header is not valid JSON or does not follow the schema in docs/FORMAT.md."""


class UnsafePathError(MalformedHeaderError):
    """A file name in the header (a carried file, a safetensors shard) could escape the output folder:
    absolute, with a ``..`` component, empty, with control characters, or colliding with another."""


class CorruptStreamError(FormatError):
    """A payload passed its checksum but could not be decoded to the declared tensor."""
