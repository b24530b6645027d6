"""The compression -> converter int8 contract (tether._internal.int8): one plan spec, one grid,
one key spelling, read by both sides."""

from __future__ import annotations

import dataclasses

from hypothesis import example, given
from hypothesis import strategies as st
from tether._internal import int8
from tether.compression import QuantizationPlan, activation_qparams
from tether.compression import quantize as compression_quantize
from tether.converter._internal import calibrate
from tether.converter._internal import quantize as converter_quantize


def test_the_compression_plan_is_the_spec() -> None:
    plan = QuantizationPlan({"conv": (0.0, 1.0)})
    assert isinstance(plan, int8.QuantizationPlanSpec)
    fields = {f.name for f in dataclasses.fields(QuantizationPlan)}
    spec = {name for name in vars(int8.QuantizationPlanSpec) if not name.startswith("_")}
    assert spec == {"activation_ranges", "bias_corrections"}
    assert spec <= fields
    assert not isinstance({"conv": (0.0, 1.0)}, int8.QuantizationPlanSpec)


def test_both_sides_spell_the_pre_activation_key_once() -> None:
    assert compression_quantize.PRE_ACTIVATION == int8.PRE_ACTIVATION_SUFFIX
    assert calibrate.pre_activation_key is int8.pre_activation_key
    assert int8.pre_activation_key("head") == "head" + int8.PRE_ACTIVATION_SUFFIX


@given(lo=st.floats(-1e4, 1e4, allow_nan=False), width=st.floats(0.0, 1e4, allow_nan=False))
@example(lo=0.0, width=7.365114145869802e-11)  # once rounded to a scale of 0
def test_both_sides_quantize_a_range_to_one_grid(lo: float, width: float) -> None:
    hi = lo + width
    assert activation_qparams is int8.activation_qparams
    scale, zp = int8.activation_qparams(lo, hi)
    q = converter_quantize._affine(lo, hi)
    assert q.scale == (scale,) and q.zero_point == (zp,)
    # The grid holds 0 exactly and covers the range (to half a step at the ends).
    assert scale > 0 and -128 <= zp <= 127
    # The zero point is the grid step nearest to where the range puts 0.
    assert abs(-128 - min(lo, 0.0) / scale - zp) <= 0.5 + 1e-6
    assert scale * (-128 - zp) <= min(lo, 0.0) + scale / 2 + 1e-9 * max(1.0, abs(lo))
    assert scale * (127 - zp) >= max(hi, 0.0) - scale / 2 - 1e-9 * max(1.0, abs(hi))
