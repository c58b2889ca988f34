"""Property-based checks of the ops (hypothesis): transfer_rows_ against
Tensor.to bit for bit, segment_mean_ against float64, over every dtype pair,
layout and index dtype. A plain run draws 1,000 fixed cases per property;
`pytest tests/test_ops_properties.py --fuzz N` draws N fresh ones."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import vocabxfer

from .conftest import DEVICES, FLOAT_DTYPES

BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
        torch.bfloat16: torch.int16}
LAYOUTS = ("contiguous", "transposed", "every other row", "column slice")


def random_bits(dtype, shape, generator):
    """Every bit pattern is possible: NaNs with payloads and signs, infinities,
    subnormals, signed zeros; half of the values are ordinary numbers."""
    bits = torch.randint(-2 ** 62, 2 ** 62, shape, generator=generator, dtype=torch.int64)
    raw = bits.to(BITS[dtype]).view(dtype)
    ordinary = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    return torch.where(torch.rand(shape, generator=generator) < 0.5, raw, ordinary)


def laid_out(values, layout, device):
    """`values` (rows x width) as a view of the given layout, same contents."""
    rows, width = values.shape
    if layout == "transposed":
        return values.t().contiguous().to(device).t()
    if layout == "every other row":
        wide = torch.zeros(2 * rows, width, dtype=values.dtype, device=device)
        wide[::2] = values.to(device)
        return wide[::2]
    if layout == "column slice":
        wide = torch.zeros(rows, width + 3, dtype=values.dtype, device=device)
        wide[:, 1:1 + width] = values.to(device)
        return wide[:, 1:1 + width]
    return values.to(device)


def draw_common(draw) -> dict:
    """What both ops' cases draw alike: device, dtypes, index dtype and the
    source's layout."""
    return dict(
        device=draw(st.sampled_from(DEVICES)),
        source_dtype=draw(st.sampled_from(FLOAT_DTYPES)),
        target_dtype=draw(st.sampled_from(FLOAT_DTYPES)),
        index_dtype=draw(st.sampled_from([torch.int32, torch.int64])),
        source_layout=draw(st.sampled_from(LAYOUTS)))


@st.composite
def transfer_cases(draw):
    source_rows = draw(st.integers(1, 40))
    target_rows = draw(st.integers(1, 40))
    pairs = draw(st.integers(0, target_rows))
    return dict(
        **draw_common(draw),
        target_layout=draw(st.sampled_from(LAYOUTS)),
        source_rows=source_rows, target_rows=target_rows, pairs=pairs,
        width=draw(st.integers(0, 70)), seed=draw(st.integers(0, 2 ** 31)))


def as_bits(tensor):
    return tensor.contiguous().view(BITS[tensor.dtype])


@pytest.mark.slow
@given(transfer_cases())
def test_transfer_rows_is_tensor_to_bit_for_bit(case):
    generator = torch.Generator().manual_seed(case["seed"])
    device, width = case["device"], case["width"]
    source = laid_out(random_bits(case["source_dtype"], (case["source_rows"], width), generator),
                      case["source_layout"], device)
    target = laid_out(random_bits(case["target_dtype"], (case["target_rows"], width), generator),
                      case["target_layout"], device)
    target_ids = torch.randperm(case["target_rows"], generator=generator)[:case["pairs"]]
    source_ids = torch.randint(0, case["source_rows"], (case["pairs"],), generator=generator)
    expected = target.clone()
    expected[target_ids.to(device)] = source[source_ids.to(device)].to(case["target_dtype"])
    vocabxfer.transfer_rows_(target, target_ids.to(case["index_dtype"]).to(device), source,
                             source_ids.to(case["index_dtype"]).to(device))
    assert torch.equal(as_bits(target), as_bits(expected))


TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3,
             torch.bfloat16: 1.6e-2}


@st.composite
def segment_cases(draw):
    segments = draw(st.integers(0, 20))
    return dict(
        **draw_common(draw),
        lengths=draw(st.lists(st.integers(1, 6), min_size=segments, max_size=segments)),
        weighted=draw(st.booleans()),
        weight_scale=draw(st.sampled_from([1e-30, 1.0, 1e30])),
        source_rows=draw(st.integers(1, 30)), width=draw(st.integers(0, 40)),
        seed=draw(st.integers(0, 2 ** 31)))


@pytest.mark.slow
@given(segment_cases())
def test_segment_mean_matches_float64(case):
    generator = torch.Generator().manual_seed(case["seed"])
    device, width, lengths = case["device"], case["width"], case["lengths"]
    values = torch.randn(case["source_rows"], width, generator=generator,
                         dtype=torch.float64).to(case["source_dtype"])
    source = laid_out(values, case["source_layout"], device)
    offsets = torch.tensor([0] + lengths).cumsum(0)
    pieces = int(offsets[-1])
    source_ids = torch.randint(0, case["source_rows"], (pieces,), generator=generator)
    target_rows = len(lengths) + 3
    target_ids = torch.randperm(target_rows, generator=generator)[:len(lengths)]
    weights = None
    if case["weighted"]:
        weights = ((torch.rand(pieces, generator=generator, dtype=torch.float64) + 0.01)
                   * case["weight_scale"]).to(torch.float32)
    target = torch.randn(target_rows, width, generator=generator).to(case["target_dtype"])
    expected = target.clone()
    for s, row in enumerate(target_ids.tolist()):
        ids = source_ids[offsets[s]:offsets[s + 1]]
        w = torch.ones(len(ids), dtype=torch.float64) if weights is None else \
            weights[offsets[s]:offsets[s + 1]].double()
        expected[row] = ((values[ids].double() * w[:, None]).sum(0) / w.sum()).to(target.dtype)
    target = target.to(device)
    index = case["index_dtype"]
    vocabxfer.segment_mean_(
        target, target_ids.to(index).to(device), source, source_ids.to(index).to(device),
        offsets.to(index).to(device),
        None if weights is None else weights.to(device))
    tolerance = max(TOLERANCE[case["source_dtype"]], TOLERANCE[case["target_dtype"]])
    torch.testing.assert_close(target.cpu().double(), expected.double(), rtol=tolerance,
                               atol=tolerance * 4)
