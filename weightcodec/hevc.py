"""Just enough HEVC (ITU-T H.265) syntax to describe a stream: profile, level, chroma, size.

Reads the first sequence parameter set of an Annex-B byte stream. Used by ``wcodec info`` and the
conformance tests; it does not decode pictures.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CorruptStreamError

NAL_SPS = 33
PROFILE_NAMES = {
    1: "Main",
    2: "Main 10",
    3: "Main Still Picture",
    4: "Format Range Extensions",
    5: "High Throughput",
    9: "Screen Content Coding",
}
CHROMA_NAMES = {0: "4:0:0", 1: "4:2:0", 2: "4:2:2", 3: "4:4:4"}


@dataclass(frozen=True)
class StreamInfo:
    profile_idc: int
    level_idc: int
    tier_high: bool
    chroma_format_idc: int
    width: int
    height: int
    monochrome_constraint: bool

    @property
    def profile(self) -> str:
        name = PROFILE_NAMES.get(self.profile_idc, f"profile {self.profile_idc}")
        if self.profile_idc == 4 and self.chroma_format_idc == 0:
            name += " (Monochrome)"
        return name

    @property
    def level(self) -> str:
        major, minor = divmod(self.level_idc, 30)
        return f"{major}.{minor // 3}" if minor else str(major)

    @property
    def chroma(self) -> str:
        return CHROMA_NAMES.get(self.chroma_format_idc, str(self.chroma_format_idc))

    def to_json(self) -> dict:
        return {
            "profile": self.profile, "profile_idc": self.profile_idc, "level": self.level,
            "level_idc": self.level_idc, "tier": "High" if self.tier_high else "Main",
            "chroma_format": self.chroma, "width": self.width, "height": self.height,
        }


def iter_nal_units(stream: bytes):
    """Yield the NAL units (without start codes) of an Annex-B byte stream."""
    data = bytes(stream)
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(data)
        yield data[start:end].rstrip(b"\x00") if n + 1 < len(starts) else data[start:end]


def _rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00)."""
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class _Bits:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            if self.pos >= 8 * len(self.data):
                raise CorruptStreamError("sequence parameter set ends early")
            value = (value << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise CorruptStreamError("bad Exp-Golomb code in sequence parameter set")
        return (1 << zeros) - 1 + self.u(zeros)


def parse_stream_info(stream: bytes) -> StreamInfo:
    """Profile, level, chroma format and cropped picture size from the stream's first SPS."""
    for nal in iter_nal_units(stream):
        if len(nal) > 2 and (nal[0] >> 1) & 0x3F == NAL_SPS:
            return _parse_sps(_rbsp(nal[2:]))
    raise CorruptStreamError("no sequence parameter set in the HEVC stream")


def _parse_sps(rbsp: bytes) -> StreamInfo:
    bits = _Bits(rbsp)
    bits.u(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = bits.u(3)
    bits.u(1)  # sps_temporal_id_nesting_flag
    bits.u(2)  # general_profile_space
    tier_high = bool(bits.u(1))
    profile_idc = bits.u(5)
    bits.u(32)  # general_profile_compatibility_flags
    bits.u(4)  # progressive, interlaced, non_packed, frame_only
    constraint = bits.u(43)
    bits.u(1)
    level_idc = bits.u(8)
    sub_profile_present, sub_level_present = [], []
    for _ in range(max_sub_layers_minus1):
        sub_profile_present.append(bits.u(1))
        sub_level_present.append(bits.u(1))
    if max_sub_layers_minus1 > 0:
        for _ in range(max_sub_layers_minus1, 8):
            bits.u(2)
    for p, l in zip(sub_profile_present, sub_level_present):
        if p:
            bits.u(88)
        if l:
            bits.u(8)
    bits.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = bits.ue()
    if chroma_format_idc == 3:
        bits.u(1)
    width, height = bits.ue(), bits.ue()
    if bits.u(1):  # conformance_window_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        sub_w = 2 if chroma_format_idc in (1, 2) else 1
        sub_h = 2 if chroma_format_idc == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    # general_max_monochrome_constraint_flag is the 6th of the RExt constraint flags
    monochrome = bool((constraint >> (43 - 6)) & 1) if profile_idc >= 4 else False
    return StreamInfo(profile_idc, level_idc, tier_high, chroma_format_idc, width, height, monochrome)
