"""segment_mean_ against a float64 reference, with and without weights, on
every device and dtype pair, and every error message."""

import pytest
import torch

import vocabxfer
from vocabxfer.ops import fallback as _fallback

from .conftest import FLOAT_DTYPES

# Tolerance of the result's dtype: the sums run in float32 (float64), so the
# error is the final rounding plus a few float32 ulps.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3,
             torch.bfloat16: 1.6e-2}


def random_segments(generator, segments, source_rows, max_pieces):
    lengths = torch.randint(1, max_pieces + 1, (segments,), generator=generator)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    source_ids = torch.randint(0, source_rows, (int(offsets[-1]),), generator=generator)
    return offsets, source_ids


def reference_means(target, target_ids, source, source_ids, offsets, weights):
    expected = target.clone()
    for s, row in enumerate(target_ids.tolist()):
        first, last = int(offsets[s]), int(offsets[s + 1])
        rows = source[source_ids[first:last].long()].double()
        w = (torch.ones(last - first, dtype=torch.float64) if weights is None
             else weights[first:last].double())
        expected[row] = ((rows * w[:, None]).sum(0) / w.sum()).to(target.dtype)
    return expected


@pytest.mark.parametrize("target_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("source_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_reference(device, generator, target_dtype, source_dtype, weighted):
    target_rows, source_rows, width, segments = 120, 90, 40, 70
    source = torch.randn(source_rows, width, generator=generator).to(source_dtype)
    offsets, source_ids = random_segments(generator, segments, source_rows, 6)
    target_ids = torch.randperm(target_rows, generator=generator)[:segments]
    weights = (torch.rand(source_ids.numel(), generator=generator) + 0.1) if weighted else None
    target = torch.randn(target_rows, width, generator=generator).to(target_dtype)
    target[target_ids] = float("nan")
    expected = reference_means(target, target_ids, source, source_ids, offsets, weights)
    target = target.to(device)
    result = vocabxfer.segment_mean_(
        target, target_ids.to(device), source.to(device), source_ids.to(device),
        offsets.to(device), None if weights is None else weights.to(device))
    assert result is target
    assert not torch.isnan(target).any()
    tolerance = max(TOLERANCE[target_dtype], TOLERANCE[source_dtype])
    untouched = torch.ones(target_rows, dtype=torch.bool)
    untouched[target_ids] = False
    assert torch.equal(target.cpu()[untouched], expected[untouched])
    torch.testing.assert_close(target.cpu().double(), expected.double(),
                               rtol=tolerance, atol=tolerance)


def test_single_piece_segments_copy_exactly(device, generator):
    source = torch.randn(30, 16, generator=generator).to(device)
    target = torch.zeros(10, 16, device=device)
    vocabxfer.segment_mean_(target, [4, 1], source, [7, 29], [0, 1, 2])
    assert torch.equal(target[4], source[7]) and torch.equal(target[1], source[29])


def test_int32_indices_and_strided_source(device, generator):
    wide = torch.randn(20, 12, generator=generator).to(device)
    source = wide[:, ::2]
    target = torch.zeros(5, 6, device=device)
    vocabxfer.segment_mean_(target, torch.tensor([0, 3], dtype=torch.int32, device=device),
                            source, torch.tensor([1, 2, 5], dtype=torch.int32, device=device),
                            torch.tensor([0, 2, 3], dtype=torch.int32, device=device))
    torch.testing.assert_close(target[0], (source[1] + source[2]) / 2)
    assert torch.equal(target[3], source[5])


def test_no_segments_is_a_no_op(device):
    target = torch.randn(4, 3, device=device)
    before = target.clone()
    vocabxfer.segment_mean_(target, torch.empty(0, dtype=torch.long, device=device),
                            torch.randn(2, 3, device=device),
                            torch.empty(0, dtype=torch.long, device=device), [0])
    assert torch.equal(target, before)


def test_opcheck(device, generator):
    source = torch.randn(30, 8, generator=generator).to(device)
    offsets, source_ids = random_segments(generator, 10, 30, 4)
    target_ids = torch.randperm(20, generator=generator)[:10]
    weights = torch.rand(source_ids.numel(), generator=generator) + 0.5
    for w in (None, weights.to(device)):
        args = (torch.randn(20, 8, device=device), target_ids.to(device), source,
                source_ids.to(device), offsets.to(device), w)
        torch.library.opcheck(torch.ops.vocabxfer.segment_mean_.default, args)


def test_torch_compile_fullgraph(device, generator):
    source = torch.randn(30, 8, generator=generator).to(device)
    offsets, source_ids = random_segments(generator, 10, 30, 4)
    target_ids = torch.randperm(20, generator=generator)[:10]
    target = torch.randn(20, 8, generator=generator)
    expected = reference_means(target, target_ids, source.cpu(), source_ids, offsets, None)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def averaged(target, target_ids, source, source_ids, offsets):
        vocabxfer.segment_mean_(target, target_ids, source, source_ids, offsets)
        return target + 1

    target = target.to(device)
    plus_one = averaged(target, target_ids.to(device), source, source_ids.to(device),
                        offsets.to(device))
    torch.testing.assert_close(target.cpu(), expected.float())
    torch.testing.assert_close(plus_one.cpu(), expected.float() + 1)


IMPLEMENTATIONS = {
    "op": lambda *args: vocabxfer.segment_mean_(*args),
    "fallback": lambda *args: _fallback.segment_mean_(*args),
}


def good_args(device):
    long = dict(dtype=torch.long, device=device)
    return [torch.zeros(10, 4, device=device), torch.tensor([1, 2], **long),
            torch.ones(6, 4, device=device), torch.tensor([0, 5, 3], **long),
            torch.tensor([0, 2, 3], **long), torch.ones(3, device=device)]


def broken(position, value):
    def apply(device):
        args = good_args(device)
        args[position] = value(device) if callable(value) else value
        return args
    return apply


ERROR_CASES = [
    ("offsets length", broken(4, lambda d: torch.tensor([0, 3], device=d)), ValueError,
     "segment_mean_: offsets has 2 entries but target_index has 2; offsets must have one "
     "entry per segment plus one"),
    ("offsets start", broken(4, lambda d: torch.tensor([1, 2, 3], device=d)), ValueError,
     r"segment_mean_: offsets\[0\] = 1 but must be 0"),
    ("offsets end", broken(4, lambda d: torch.tensor([0, 2, 2], device=d)), ValueError,
     r"segment_mean_: offsets\[2\] = 2 but must equal the length of source_index \(3\)"),
    ("empty segment", broken(4, lambda d: torch.tensor([0, 0, 3], device=d)), ValueError,
     r"segment_mean_: segment 0 is empty or reversed \(offsets\[0\] = 0, offsets\[1\] = 0\)"),
    ("target range", broken(1, lambda d: torch.tensor([1, 10], device=d)), IndexError,
     r"segment_mean_: target_index\[1\] = 10 is out of range for target with 10 rows"),
    ("duplicate", broken(1, lambda d: torch.tensor([4, 4], device=d)), ValueError,
     r"segment_mean_: target_index holds row 4 twice \(positions 0 and 1\)"),
    ("source range", broken(3, lambda d: torch.tensor([0, 6, 3], device=d)), IndexError,
     r"segment_mean_: source_index\[1\] = 6 is out of range for source with 6 rows"),
    ("zero weight", broken(5, lambda d: torch.tensor([1.0, 0.0, 1.0], device=d)), ValueError,
     r"segment_mean_: weights\[1\] = 0 but weights must be finite and greater than 0"),
    ("nan weight", broken(5, lambda d: torch.tensor([1.0, 1.0, float("nan")], device=d)),
     ValueError, r"segment_mean_: weights\[2\] = nan but weights must be finite"),
    ("weights length", broken(5, lambda d: torch.ones(2, device=d)), ValueError,
     r"segment_mean_: weights must be 1-D with one weight per source_index entry \(3\), got "
     r"shape \[2\]"),
    ("int weights", broken(5, lambda d: torch.ones(3, dtype=torch.long, device=d)), TypeError,
     "segment_mean_: weights must be a floating tensor, got Long"),
    ("widths differ", broken(2, lambda d: torch.ones(6, 3, device=d)), ValueError,
     "segment_mean_: target rows have width 4 but source rows have width 3"),
    ("float offsets", broken(4, lambda d: torch.tensor([0.0, 2.0, 3.0], device=d)), TypeError,
     "segment_mean_: offsets must be int64 or int32, got Float"),
]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name,make_args,exception,message", ERROR_CASES,
                         ids=[case[0] for case in ERROR_CASES])
def test_error_messages(error_paths_survive, device, implementation, name, make_args, exception,
                        message):
    args = make_args(device)
    before = args[0].clone()
    with pytest.raises(exception, match=message):
        IMPLEMENTATIONS[implementation](*args)
    assert torch.equal(args[0], before), "nothing may be written before an error"


def test_good_args_pass(device):
    # The error cases above only prove something if the unbroken call works.
    for run in IMPLEMENTATIONS.values():
        args = good_args(device)
        run(*args)
        torch.testing.assert_close(args[0][1], torch.ones(4, device=device))


def test_huge_weights_and_values_do_not_overflow(device):
    # Rows are scaled by their share of the segment's weight before the sum:
    # neither 3e38 weights nor 3e38 values overflow float32.
    source = torch.tensor([[3e38, 1.0], [3e38, 3.0]], device=device)
    target = torch.zeros(1, 2, device=device)
    for weights in (None, torch.tensor([3e38, 3e38], device=device)):
        for run in IMPLEMENTATIONS.values():
            target.zero_()
            run(target, torch.tensor([0], device=device), source,
                torch.tensor([0, 1], device=device), torch.tensor([0, 2], device=device), weights)
            assert torch.isfinite(target).all(), target
            torch.testing.assert_close(target[0], torch.tensor([3e38, 2.0], device=device))


def test_inference_tensor_target_is_refused():
    with torch.inference_mode():
        target = torch.zeros(3, 2)
    for run in IMPLEMENTATIONS.values():
        with pytest.raises(ValueError, match="segment_mean_: target is an inference tensor"):
            run(target, torch.tensor([0]), torch.ones(2, 2), torch.tensor([0, 1]),
                torch.tensor([0, 2]), None)
    assert torch.equal(target, torch.zeros(3, 2))


def test_float64_weights_whose_sum_overflows_still_give_the_mean(device):
    # Two weights of 1e308 sum to inf in float64: each segment is divided by
    # its largest weight first, so the shares are still 1/2 and 1/2.
    source = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64,
                          device=device)
    weights = torch.tensor([1e308, 1e308, 1.0], dtype=torch.float64, device=device)
    for run in IMPLEMENTATIONS.values():
        target = torch.full((2, 2), -7.0, dtype=torch.float64, device=device)
        run(target, torch.tensor([0, 1], device=device), source,
            torch.tensor([0, 1, 2], device=device), torch.tensor([0, 2, 3], device=device),
            weights)
        torch.testing.assert_close(target, torch.tensor([[2.0, 3.0], [5.0, 6.0]],
                                                        dtype=torch.float64, device=device))


@pytest.mark.parametrize("huge,tiny", [(1e308, 1e-50), (1e300, 1e-300)])
def test_float64_weights_beyond_float32_are_read_as_given(device, huge, tiny):
    # A float32 source does not make its weights float32: 1e308 would be inf
    # and 1e-50 would be 0 (and refused, named so).
    source = torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    weights = torch.tensor([huge, tiny], dtype=torch.float64, device=device)
    for run in IMPLEMENTATIONS.values():
        target = torch.full((1, 2), -7.0, device=device)
        run(target, torch.tensor([0], device=device), source,
            torch.tensor([0, 1], device=device), torch.tensor([0, 2], device=device), weights)
        torch.testing.assert_close(target, torch.tensor([[1.0, 2.0]], device=device))


def test_a_bad_float64_weight_is_named_by_its_own_value(error_paths_survive, device):
    source = torch.ones(2, 2, device=device)
    for bad, shown in ((-1e308, r"-1e\+308"), (float("inf"), "inf")):
        weights = torch.tensor([1e-50, bad], dtype=torch.float64, device=device)
        for run in IMPLEMENTATIONS.values():
            with pytest.raises(ValueError, match=rf"weights\[1\] = {shown} but weights must"):
                run(torch.zeros(1, 2, device=device), torch.tensor([0], device=device), source,
                    torch.tensor([0, 1], device=device), torch.tensor([0, 2], device=device),
                    weights)


def test_weights_on_the_meta_device_are_named_as_the_weights():
    with pytest.raises(ValueError, match="weights are on meta but the indices on cpu"):
        vocabxfer.segment_mean_(torch.zeros(1, 2), [0], torch.ones(2, 2), [0, 1], [0, 2],
                                torch.ones(2, device="meta"))
