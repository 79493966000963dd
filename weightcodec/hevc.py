"""Just enough HEVC (ITU-T H.265) syntax to describe and vet a stream: profile, level, chroma, size.

Reads sequence parameter sets and NAL unit headers of an Annex-B byte stream; it does not decode
pictures. Used by ``wcodec info``, the conformance tests and the decoders' pre-check
(:func:`weightcodec.backends.base.check_stream`). Every parser here takes arbitrary bytes: it
returns or raises :class:`CorruptStreamError`, nothing else, and bounds every value it reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CorruptStreamError

NAL_VPS, NAL_SPS, NAL_PPS = 32, 33, 34
#: Slice segment NAL unit types (Table 7-1): TRAIL_N .. RASL_R and BLA_W_LP .. CRA_NUT. The
#: reserved VCL types (10-15, 22-31) carry no slices a decoder would decode.
SLICE_SEGMENT_TYPES = frozenset(range(0, 10)) | frozenset(range(16, 22))
PROFILE_NAMES = {
    1: "Main",
    2: "Main 10",
    3: "Main Still Picture",
    4: "Format Range Extensions",
    5: "High Throughput",
    9: "Screen Content Coding",
}
CHROMA_NAMES = {0: "4:0:0", 1: "4:2:0", 2: "4:2:2", 3: "4:4:4"}
#: Largest picture side the parser accepts (HEVC level 6.2 allows 8444 luma samples a side).
MAX_SIDE = 16384
#: Only the head of an SPS is read (everything up to the bit depths fits in ~200 bytes).
_SPS_HEAD_BYTES = 512


@dataclass(frozen=True)
class StreamInfo:
    """What one sequence parameter set declares. ``width``/``height`` are the cropped picture size
    (conformance window applied), ``coded_width``/``coded_height`` the size the decoder allocates."""

    profile_idc: int
    level_idc: int
    tier_high: bool
    chroma_format_idc: int
    width: int
    height: int
    monochrome_constraint: bool
    bit_depth_luma: int = 8
    bit_depth_chroma: int = 8
    coded_width: int = 0
    coded_height: int = 0
    separate_colour_planes: bool = False
    vps_id: int = 0
    sps_id: int = 0

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
    data = stream if isinstance(stream, (bytes, bytearray)) else bytes(stream)  # no copy of a whole stream
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(data)
        yield data[start:end].rstrip(b"\x00") if n + 1 < len(starts) else data[start:end]


def nal_type(nal: bytes) -> int:
    """``nal_unit_type`` of a NAL unit (at least 2 bytes)."""
    return (nal[0] >> 1) & 0x3F


def nal_layer_id(nal: bytes) -> int:
    """``nuh_layer_id`` of a NAL unit (at least 2 bytes)."""
    return ((nal[0] & 1) << 5) | (nal[1] >> 3)


def nal_header_valid(nal: bytes) -> bool:
    """False if ``forbidden_zero_bit`` is set or ``nuh_temporal_id_plus1`` is 0 (decoders skip such units)."""
    return len(nal) >= 2 and not nal[0] & 0x80 and bool(nal[1] & 7)


def starts_picture(nal: bytes) -> bool:
    """True for a slice segment NAL unit whose ``first_slice_segment_in_pic_flag`` is 1."""
    return len(nal) > 2 and nal_type(nal) in SLICE_SEGMENT_TYPES and bool(nal[2] & 0x80)


def _rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00)."""
    return bytes(nal).replace(b"\x00\x00\x03", b"\x00\x00")


class _Bits:
    def __init__(self, data: bytes, unit: str = "sequence parameter set"):
        self.data, self.pos, self.unit = data, 0, unit

    def u(self, n: int) -> int:
        if self.pos + n > 8 * len(self.data):
            raise CorruptStreamError(f"{self.unit} ends early")
        value = 0
        for _ in range(n):
            value = (value << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def se(self, what: str, low: int, high: int) -> int:
        """A signed Exp-Golomb value in ``[low, high]``."""
        k = self.ue(what)
        value = (k + 1) // 2 if k % 2 else -(k // 2)
        if not low <= value <= high:
            raise CorruptStreamError(f"{self.unit} declares {what} = {value} (allowed {low}..{high})")
        return value

    def trailing(self) -> None:
        """rbsp_trailing_bits: a 1, zeros to the byte boundary, then nothing."""
        if self.u(1) != 1 or (self.pos % 8 and self.u(8 - self.pos % 8)) or self.pos != 8 * len(self.data):
            raise CorruptStreamError(f"{self.unit} does not end with its trailing bits")

    def ue(self, what: str, limit: int = 2**32 - 2) -> int:
        """An Exp-Golomb value, at most ``limit`` (the syntax element's legal maximum)."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise CorruptStreamError(f"bad Exp-Golomb code for {what} in {self.unit}")
        value = (1 << zeros) - 1 + self.u(zeros)
        if value > limit:
            raise CorruptStreamError(f"{self.unit} declares {what} = {value} (at most {limit})")
        return value


def parse_stream_info(stream: bytes) -> StreamInfo:
    """Profile, level, chroma format and cropped picture size from the stream's first SPS."""
    for nal in iter_nal_units(stream):
        if len(nal) > 2 and nal_type(nal) == NAL_SPS:
            return parse_sps(nal)
    raise CorruptStreamError("no sequence parameter set in the HEVC stream")


def parse_sps(nal: bytes) -> StreamInfo:
    """Parse an SPS NAL unit (with its 2-byte header) up to the bit depths; CorruptStreamError if malformed."""
    if len(nal) < 3 or nal_type(nal) != NAL_SPS:
        raise CorruptStreamError("not a sequence parameter set NAL unit")
    if nal_layer_id(nal) != 0:
        raise CorruptStreamError(
            f"sequence parameter set for layer {nal_layer_id(nal)}: multi-layer streams are not supported")
    bits = _Bits(_rbsp(nal[2:2 + _SPS_HEAD_BYTES]))
    vps_id = bits.u(4)
    max_sub_layers_minus1 = bits.u(3)
    if max_sub_layers_minus1 > 6:
        raise CorruptStreamError(f"sequence parameter set declares {max_sub_layers_minus1 + 1} sub-layers (at most 7)")
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
    sps_id = bits.ue("sps_seq_parameter_set_id", 15)
    chroma_format_idc = bits.ue("chroma_format_idc", 3)
    separate = bool(bits.u(1)) if chroma_format_idc == 3 else False
    coded_width = bits.ue("pic_width_in_luma_samples")
    coded_height = bits.ue("pic_height_in_luma_samples")
    if not (1 <= coded_width <= MAX_SIDE and 1 <= coded_height <= MAX_SIDE):
        raise CorruptStreamError(
            f"sequence parameter set declares {coded_width}x{coded_height} pictures (sides must be 1..{MAX_SIDE})")
    width, height = coded_width, coded_height
    if bits.u(1):  # conformance_window_flag
        left, right = bits.ue("conf_win_left_offset"), bits.ue("conf_win_right_offset")
        top, bottom = bits.ue("conf_win_top_offset"), bits.ue("conf_win_bottom_offset")
        sub_w = 2 if chroma_format_idc in (1, 2) and not separate else 1
        sub_h = 2 if chroma_format_idc == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
        if width < 1 or height < 1:
            raise CorruptStreamError(
                f"sequence parameter set crops its {coded_width}x{coded_height} pictures to nothing")
    bit_depth_luma = 8 + bits.ue("bit_depth_luma_minus8", 8)
    bit_depth_chroma = 8 + bits.ue("bit_depth_chroma_minus8", 8)
    # general_max_monochrome_constraint_flag is the 6th of the RExt constraint flags
    monochrome = bool((constraint >> (43 - 6)) & 1) if profile_idc >= 4 else False
    return StreamInfo(profile_idc, level_idc, tier_high, chroma_format_idc, width, height, monochrome,
                      bit_depth_luma, bit_depth_chroma, coded_width, coded_height, separate, vps_id, sps_id)


def vps_id(nal: bytes) -> int:
    """``vps_video_parameter_set_id`` of a VPS NAL unit."""
    if len(nal) < 3:
        raise CorruptStreamError("video parameter set ends early")
    return nal[2] >> 4


#: Largest picture parameter set a reader parses (ours are 6 bytes; scaling lists take a few hundred).
MAX_PPS_BYTES = 4096


def pps_ids(nal: bytes) -> tuple[int, int]:
    """(``pps_pic_parameter_set_id``, ``pps_seq_parameter_set_id``) of a PPS NAL unit, after checking
    its whole syntax (H.265 7.3.2.3.1) and value ranges (7.4.3.3) for an 8-bit single-layer stream.

    Decoders differ on a malformed PPS (libde265 and the ffmpeg executable reject it, libavcodec
    through PyAV may decode anyway), so the shared pre-check rejects it for all of them.
    """
    if len(nal) > MAX_PPS_BYTES:
        raise CorruptStreamError(f"picture parameter set of {len(nal)} bytes (at most {MAX_PPS_BYTES})")
    bits = _Bits(_rbsp(nal[2:]), "picture parameter set")
    pps = bits.ue("pps_pic_parameter_set_id", 63)
    sps = bits.ue("pps_seq_parameter_set_id", 15)
    bits.u(2)  # dependent_slice_segments_enabled_flag, output_flag_present_flag
    bits.u(3)  # num_extra_slice_header_bits
    bits.u(2)  # sign_data_hiding_enabled_flag, cabac_init_present_flag
    bits.ue("num_ref_idx_l0_default_active_minus1", 14)
    bits.ue("num_ref_idx_l1_default_active_minus1", 14)
    bits.se("init_qp_minus26", -26, 25)  # 8-bit: QpBdOffsetY = 0
    bits.u(1)  # constrained_intra_pred_flag
    transform_skip = bits.u(1)
    if bits.u(1):  # cu_qp_delta_enabled_flag
        bits.ue("diff_cu_qp_delta_depth", 3)
    bits.se("pps_cb_qp_offset", -12, 12)
    bits.se("pps_cr_qp_offset", -12, 12)
    bits.u(4)  # slice_chroma_qp_offsets_present, weighted_pred, weighted_bipred, transquant_bypass
    tiles = bits.u(1)
    bits.u(1)  # entropy_coding_sync_enabled_flag
    if tiles:
        columns = bits.ue("num_tile_columns_minus1", 19)
        rows = bits.ue("num_tile_rows_minus1", 21)
        if columns == 0 and rows == 0:
            raise CorruptStreamError("picture parameter set enables tiles but declares one tile")
        if not bits.u(1):  # uniform_spacing_flag
            for _ in range(columns + rows):
                bits.ue("tile column width / row height", 2**16)
        bits.u(1)  # loop_filter_across_tiles_enabled_flag
    bits.u(1)  # pps_loop_filter_across_slices_enabled_flag
    if bits.u(1):  # deblocking_filter_control_present_flag
        bits.u(1)  # deblocking_filter_override_enabled_flag
        if not bits.u(1):  # pps_deblocking_filter_disabled_flag
            bits.se("pps_beta_offset_div2", -6, 6)
            bits.se("pps_tc_offset_div2", -6, 6)
    if bits.u(1):  # pps_scaling_list_data_present_flag
        _scaling_list_data(bits)
    bits.u(1)  # lists_modification_present_flag
    bits.ue("log2_parallel_merge_level_minus2", 4)
    bits.u(1)  # slice_segment_header_extension_present_flag
    if bits.u(1):  # pps_extension_present_flag
        range_ext, multilayer, ext_3d, scc = (bits.u(1) for _ in range(4))
        extension_4bits = bits.u(4)
        if multilayer or ext_3d or scc:
            raise CorruptStreamError("picture parameter set with multi-layer, 3D or screen-content extensions")
        if range_ext:
            if transform_skip:
                bits.ue("log2_max_transform_skip_block_size_minus2", 3)
            bits.u(1)  # cross_component_prediction_enabled_flag
            if bits.u(1):  # chroma_qp_offset_list_enabled_flag
                bits.ue("diff_cu_chroma_qp_offset_depth", 3)
                for _ in range(bits.ue("chroma_qp_offset_list_len_minus1", 5) + 1):
                    bits.se("cb_qp_offset_list", -12, 12)
                    bits.se("cr_qp_offset_list", -12, 12)
            bits.ue("log2_sao_offset_scale_luma", 0)  # 8-bit: 0
            bits.ue("log2_sao_offset_scale_chroma", 0)
        if extension_4bits:  # pps_extension_data_flag until the trailing bits: nothing to check
            return pps, sps
    bits.trailing()
    return pps, sps


def _scaling_list_data(bits: "_Bits") -> None:
    for size_id in range(4):
        for matrix_id in range(0, 6, 3 if size_id == 3 else 1):
            if not bits.u(1):  # scaling_list_pred_mode_flag
                bits.ue("scaling_list_pred_matrix_id_delta", matrix_id // 3 if size_id == 3 else matrix_id)
                continue
            next_coef = 8
            if size_id > 1:
                next_coef = bits.se("scaling_list_dc_coef_minus8", -7, 247) + 8
            for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                next_coef = (next_coef + bits.se("scaling_list_delta_coef", -128, 127) + 256) % 256
                if next_coef == 0:
                    raise CorruptStreamError("picture parameter set has a scaling list entry of 0")


def slice_pps_id(nal: bytes) -> int:
    """``slice_pic_parameter_set_id`` of a slice segment NAL unit."""
    bits = _Bits(_rbsp(nal[2:16]), "slice segment header")
    bits.u(1)  # first_slice_segment_in_pic_flag
    if 16 <= nal_type(nal) <= 23:
        bits.u(1)  # no_output_of_prior_pics_flag
    return bits.ue("slice_pic_parameter_set_id", 63)
