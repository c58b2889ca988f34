"""transfer_rows_ against a pure-torch reference, on every device, dtype pair,
index dtype and layout, and every error message."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import vocabxfer
from vocabxfer.ops import fallback as _fallback

from .conftest import FLOAT_DTYPES

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_case(generator, target_rows, source_rows, width, pairs, source_dtype,
                index_dtype=torch.int64):
    source = torch.randn(source_rows, width, generator=generator).to(source_dtype)
    target_ids = torch.randperm(target_rows, generator=generator)[:pairs].to(index_dtype)
    source_ids = torch.randint(0, source_rows, (pairs,), generator=generator).to(index_dtype)
    return source, target_ids, source_ids


def expected_after(target, target_ids, source, source_ids):
    expected = target.clone()
    expected[target_ids.long()] = source[source_ids.long()].to(target.dtype)
    return expected


def poisoned_target(generator, rows, width, dtype, target_ids):
    """Random rows everywhere, NaN in the rows about to be written: a row the
    op forgets stays NaN, a row it should not touch must stay as it was."""
    target = torch.randn(rows, width, generator=generator).to(dtype)
    target[target_ids.long()] = float("nan")
    return target


@pytest.mark.parametrize("target_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("source_dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_matches_reference_bit_exact(device, generator, target_dtype, source_dtype, index_dtype):
    for target_rows, source_rows, width, pairs in [(50, 40, 16, 30), (300, 500, 37, 200),
                                                   (7, 9, 1, 7), (64, 64, 768, 20)]:
        source, target_ids, source_ids = random_case(
            generator, target_rows, source_rows, width, pairs, source_dtype, index_dtype)
        target = poisoned_target(generator, target_rows, width, target_dtype, target_ids)
        expected = expected_after(target, target_ids, source, source_ids)
        target, source = target.to(device), source.to(device)
        result = vocabxfer.transfer_rows_(target, target_ids.to(device), source,
                                          source_ids.to(device))
        assert result is target
        assert not torch.isnan(target).any()
        assert torch.equal(target.cpu(), expected)


def test_conversion_rounds_like_tensor_to(device):
    # Values chosen to sit between representable half/bfloat16 numbers,
    # including ties, subnormals, overflow and the largest float64s.
    values = torch.tensor([1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11, 65520.0, 1e-8, -2.5e-5,
                           3.0000001, 1e300, -1e300, 2 ** -149, float("inf")],
                          dtype=torch.float64)
    source = values.repeat(3, 1).to(device)
    for target_dtype in FLOAT_DTYPES:
        target = torch.zeros(3, values.numel(), dtype=target_dtype, device=device)
        vocabxfer.transfer_rows_(target, [2, 0, 1], source, [0, 1, 2])
        assert torch.equal(target, source.to(target_dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_strided_source_and_target(device, generator, dtype):
    width, source_rows, target_rows = 24, 60, 50
    # A transposed source: columns are the rows, stride(1) != 1.
    source = torch.randn(width, source_rows, generator=generator).to(dtype).to(device).t()
    # A column slice of a wider target: rows are dense but not adjacent.
    wide = torch.randn(target_rows, width + 10, generator=generator).to(dtype).to(device)
    target = wide[:, 3:3 + width]
    target_ids = torch.randperm(target_rows, generator=generator)[:30].to(device)
    source_ids = torch.randint(0, source_rows, (30,), generator=generator).to(device)
    wide_expected = wide.clone()
    wide_expected[:, 3:3 + width][target_ids] = source[source_ids]
    vocabxfer.transfer_rows_(target, target_ids, source, source_ids)
    assert torch.equal(wide, wide_expected)
    # And every second row of a source, with a float32 target: strided + converting.
    every_other = torch.randn(2 * source_rows, width, generator=generator).to(device)[::2]
    target = torch.randn(target_rows, width, generator=generator).to(dtype).to(device)
    expected = target.clone()
    expected[target_ids] = every_other[source_ids].to(dtype)
    vocabxfer.transfer_rows_(target, target_ids, every_other, source_ids)
    assert torch.equal(target, expected)


def test_mixed_index_dtypes(device, generator):
    source, target_ids, source_ids = random_case(generator, 40, 40, 8, 20, torch.float32)
    target = poisoned_target(generator, 40, 8, torch.float32, target_ids)
    expected = expected_after(target, target_ids, source, source_ids)
    target = target.to(device)
    vocabxfer.transfer_rows_(target, target_ids.int().to(device), source.to(device),
                             source_ids.long().to(device))
    assert torch.equal(target.cpu(), expected)


def test_empty_index_is_a_no_op(device, generator):
    target = torch.randn(5, 4, generator=generator).to(device)
    before = target.clone()
    vocabxfer.transfer_rows_(target, torch.empty(0, dtype=torch.long, device=device),
                             torch.randn(3, 4).to(device),
                             torch.empty(0, dtype=torch.long, device=device))
    assert torch.equal(target, before)


def test_sequences_are_accepted_as_indices(device):
    source = torch.arange(12, dtype=torch.float32, device=device).reshape(4, 3)
    target = torch.zeros(3, 3, device=device)
    vocabxfer.transfer_rows_(target, [2, 0], source, (1, 3))
    assert target.cpu().tolist() == [[9, 10, 11], [0, 0, 0], [3, 4, 5]]


def test_embedding_weight_that_requires_grad(device, generator):
    # The common recipe fails here without torch.no_grad(); the op must not.
    embedding = torch.nn.Embedding(20, 8).to(device)
    source = torch.randn(10, 8, generator=generator).to(device)
    version = embedding.weight._version
    vocabxfer.transfer_rows_(embedding.weight, [3, 4], source, [0, 9])
    assert embedding.weight.requires_grad and embedding.weight.is_leaf
    assert embedding.weight._version > version
    assert torch.equal(embedding.weight[3].detach(), source[0])
    assert torch.equal(embedding.weight[4].detach(), source[9])
    # The weight still trains afterwards.
    embedding(torch.tensor([3], device=device)).sum().backward()
    assert embedding.weight.grad[3].abs().sum() > 0


def test_opcheck(device, generator):
    source, target_ids, source_ids = random_case(generator, 30, 20, 6, 10, torch.float32)
    target = torch.randn(30, 6, generator=generator, dtype=torch.float16)
    args = (target.to(device), target_ids.to(device), source.to(device), source_ids.to(device))
    torch.library.opcheck(torch.ops.vocabxfer.transfer_rows_.default, args)


def test_torch_compile_fullgraph(device, generator):
    source, target_ids, source_ids = random_case(generator, 30, 20, 6, 10, torch.float32)
    target = poisoned_target(generator, 30, 6, torch.float32, target_ids)
    expected = expected_after(target, target_ids, source, source_ids)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def transfer_then_scale(target, target_ids, source, source_ids):
        vocabxfer.transfer_rows_(target, target_ids, source, source_ids)
        return target * 2

    target = target.to(device)
    doubled = transfer_then_scale(target, target_ids.to(device), source.to(device),
                                  source_ids.to(device))
    assert torch.equal(target.cpu(), expected)
    assert torch.equal(doubled.cpu(), expected * 2)


# ---- errors: every message, from the compiled op and from the fallback -----

IMPLEMENTATIONS = {
    "op": lambda *args: vocabxfer.transfer_rows_(*args),
    "fallback": lambda *args: _fallback.transfer_rows_(*args),
}


def good_args(device):
    return (torch.zeros(10, 4, device=device), torch.tensor([1, 2], device=device),
            torch.ones(6, 4, device=device), torch.tensor([0, 5], device=device))


def replaced(args, position, value):
    args = list(args)
    args[position] = value
    return tuple(args)


ERROR_CASES = [
    # (name, how to break good args, exception, message)
    ("int target", lambda a, d: replaced(a, 0, torch.zeros(10, 4, dtype=torch.int32, device=d)),
     TypeError, "transfer_rows_: target must be float64, float32, float16 or bfloat16, got Int"),
    ("1-D source", lambda a, d: replaced(a, 2, torch.ones(6, device=d)),
     ValueError, r"transfer_rows_: source must be 2-D \(rows x width\), got 1-D with shape \[6\]"),
    ("float index", lambda a, d: replaced(a, 1, torch.tensor([1.0, 2.0], device=d)),
     TypeError, "transfer_rows_: target_index must be int64 or int32, got Float"),
    ("2-D index", lambda a, d: replaced(a, 3, torch.tensor([[0, 5]], device=d)),
     ValueError, r"transfer_rows_: source_index must be 1-D, got 2-D with shape \[1, 2\]"),
    ("lengths differ", lambda a, d: replaced(a, 3, torch.tensor([0, 5, 1], device=d)),
     ValueError, "transfer_rows_: target_index has 2 entries but source_index has 3; they are "
                 "pairs and must have equal length"),
    ("widths differ", lambda a, d: replaced(a, 2, torch.ones(6, 5, device=d)),
     ValueError, "transfer_rows_: target rows have width 4 but source rows have width 5; rows "
                 "must have the same width"),
    ("target too high", lambda a, d: replaced(a, 1, torch.tensor([1, 10], device=d)),
     IndexError, r"transfer_rows_: target_index\[1\] = 10 is out of range for target with 10 rows"),
    ("negative source", lambda a, d: replaced(a, 3, torch.tensor([-1, 5], device=d)),
     IndexError, r"transfer_rows_: source_index\[0\] = -1 is out of range for source with 6 rows"),
    ("source too high", lambda a, d: replaced(a, 3, torch.tensor([0, 40000], device=d)),
     IndexError, r"transfer_rows_: source_index\[1\] = 40000 is out of range for source with 6 "
                 "rows"),
    ("duplicate target", lambda a, d: replaced(replaced(a, 1, torch.tensor([7, 3, 7], device=d)),
                                               3, torch.tensor([0, 1, 2], device=d)),
     ValueError, r"transfer_rows_: target_index holds row 7 twice \(positions 0 and 2\); each "
                 "target row may be written once"),
    ("expanded target", lambda a, d: replaced(a, 0, torch.zeros(1, 4, device=d).expand(10, 4)),
     ValueError, "transfer_rows_: target has elements that share memory"),
]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name,breaker,exception,message", ERROR_CASES,
                         ids=[case[0] for case in ERROR_CASES])
def test_error_messages(error_paths_survive, device, implementation, name, breaker, exception,
                        message):
    args = breaker(good_args(device), device)
    before = args[0].clone()
    with pytest.raises(exception, match=message):
        IMPLEMENTATIONS[implementation](*args)
    assert torch.equal(args[0], before), "nothing may be written before an error"


# Large enough that the compiled check splits the pairs over threads (each
# with its own bitmap, merged after): a repeat may sit across two chunks.
LARGE_PAIRS = 100_000
LARGE_ROWS = 131_072


@pytest.fixture
def four_threads():
    """The check's threads come from torch's pool: four, whatever the host."""
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


def large_case(generator, device, rows=LARGE_ROWS):
    target_ids = torch.randperm(rows, generator=generator)[:LARGE_PAIRS]
    source_ids = torch.randint(0, 1000, (LARGE_PAIRS,), generator=generator)
    target = torch.zeros(rows, 2, device=device)
    source = torch.randn(1000, 2, generator=generator).to(device)
    return target, target_ids, source, source_ids


def test_a_large_valid_index_set_is_written(four_threads, device, generator):
    target, target_ids, source, source_ids = large_case(generator, device)
    expected = expected_after(target, target_ids.to(device), source, source_ids.to(device))
    vocabxfer.transfer_rows_(target, target_ids, source, source_ids)
    assert torch.equal(target, expected)


@pytest.mark.parametrize("first,second", [(0, LARGE_PAIRS - 1), (24_999, 25_000),
                                          (49_999, 50_000), (LARGE_PAIRS - 2, LARGE_PAIRS - 1)],
                         ids=["first and last", "across a quarter", "across the half",
                              "within the last chunk"])
def test_a_row_repeated_in_a_large_index_set_is_found(four_threads, device, generator, first,
                                                       second):
    target, target_ids, source, source_ids = large_case(generator, device)
    target_ids[second] = target_ids[first]
    with pytest.raises(ValueError, match=rf"target_index holds row {int(target_ids[first])} "
                                         rf"twice \(positions {first} and {second}\)"):
        vocabxfer.transfer_rows_(target, target_ids, source, source_ids)
    assert not target.any(), "nothing may be written before an error"


# 100,000 pairs into 3.2M rows: 50,000 bitmap words a chunk, so two chunks,
# not four; into 8M rows, one.
@pytest.mark.parametrize("rows", [3_200_000, 8_000_000])
def test_a_repeat_is_found_when_the_target_limits_the_chunks(four_threads, device, generator,
                                                             rows):
    target, target_ids, source, source_ids = large_case(generator, device, rows)
    target_ids[50_000] = target_ids[49_999]
    with pytest.raises(ValueError, match=rf"holds row {int(target_ids[50_000])} twice "
                                         r"\(positions 49999 and 50000\)"):
        vocabxfer.transfer_rows_(target, target_ids, source, source_ids)
    assert not target.any(), "nothing may be written before an error"


@pytest.mark.parametrize("position", [0, 60_000, LARGE_PAIRS - 1])
def test_an_id_out_of_range_in_a_large_index_set_is_found(four_threads, device, generator,
                                                          position):
    target, target_ids, source, source_ids = large_case(generator, device)
    source_ids[position] = 1000
    with pytest.raises(IndexError, match=rf"source_index\[{position}\] = 1000 is out of "
                                         "range for source with 1000 rows"):
        vocabxfer.transfer_rows_(target, target_ids, source, source_ids)
    assert not target.any(), "nothing may be written before an error"


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_target_sharing_memory_with_source_is_refused(device, implementation):
    storage = torch.randn(10, 4, device=device)
    before = storage.clone()
    with pytest.raises(ValueError, match="transfer_rows_: target and source share memory"):
        IMPLEMENTATIONS[implementation](storage[:5], torch.tensor([0, 1], device=device),
                                        storage[3:], torch.tensor([0, 1], device=device))
    assert torch.equal(storage, before)
    # Disjoint halves of one buffer share a storage but not memory: allowed.
    IMPLEMENTATIONS[implementation](storage[:5], torch.tensor([0, 1], device=device),
                                    storage[5:], torch.tensor([0, 1], device=device))
    assert torch.equal(storage[:2], before[5:7])


@cuda_only
def test_devices_must_match(error_paths_survive):
    with pytest.raises(ValueError, match="transfer_rows_: source is on cpu but target is on "
                                         "cuda:0; all tensors must be on one device"):
        vocabxfer.transfer_rows_(torch.zeros(4, 2, device="cuda"), [0],
                                 torch.zeros(4, 2), torch.tensor([0], device="cuda"))


@cuda_only
def test_cuda_bad_index_leaves_the_context_usable(error_paths_survive):
    target = torch.zeros(8, 4, device="cuda")
    with pytest.raises(IndexError, match=r"source_index\[2\] = 9 is out of range"):
        vocabxfer.transfer_rows_(target, [0, 1, 2], torch.ones(9, 4, device="cuda")[:3].clone(),
                                 [0, 1, 9])
    # A device-side assert would make every later CUDA call fail.
    assert torch.equal(target, torch.zeros(8, 4, device="cuda"))
    assert (torch.ones(3, device="cuda") * 2).sum().item() == 6


@pytest.mark.parametrize("target_dtype", FLOAT_DTYPES)
def test_fallback_matches_compiled(generator, target_dtype):
    source, target_ids, source_ids = random_case(generator, 100, 80, 33, 60, torch.float32)
    target = torch.randn(100, 33, generator=generator).to(target_dtype)
    compiled, fallback = target.clone(), target.clone()
    vocabxfer.transfer_rows_(compiled, target_ids, source, source_ids)
    _fallback.transfer_rows_(fallback, target_ids, source, source_ids)
    assert torch.equal(compiled, fallback)


def test_import_without_compiled_module_warns_and_works():
    script = (
        "import sys, warnings\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'vocabxfer._C':\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import torch, vocabxfer\n"
        "messages = [str(w.message) for w in caught if 'vocabxfer' in str(w.message)]\n"
        "assert len(messages) == 1 and 'blocked for the test' in messages[0], messages\n"
        "assert not vocabxfer.has_compiled_ops()\n"
        "t = torch.zeros(3, 2)\n"
        "vocabxfer.transfer_rows_(t, [2], torch.ones(1, 2), [0])\n"
        "assert t[2].tolist() == [1.0, 1.0] and t[0].tolist() == [0.0, 0.0]\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_compiled_ops_are_in_use():
    # CI builds the extension; a silent fall back to pure torch would hide a
    # broken build behind passing tests.
    assert vocabxfer.has_compiled_ops(), vocabxfer.ops._extension.LOAD_ERROR


# ---- no silent wrong answers ---------------------------------------------------

@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_memory_shared_through_separate_storages_is_refused(implementation):
    numpy = pytest.importorskip("numpy")
    array = numpy.arange(12, dtype=numpy.float32).reshape(6, 2)
    target, source = torch.from_numpy(array), torch.from_numpy(array)
    assert target.untyped_storage() is not source.untyped_storage()
    with pytest.raises(ValueError, match="transfer_rows_: target and source share memory"):
        IMPLEMENTATIONS[implementation](target, torch.tensor([0, 1]), source,
                                        torch.tensor([1, 0]))
    assert array.tolist() == numpy.arange(12, dtype=numpy.float32).reshape(6, 2).tolist()


@pytest.mark.parametrize("index,message", [
    ([0.7, 1.9], "target_index must hold integers, got values of type float32"),
    ([True, False], "target_index must hold integers, got values of type bool"),
    ("01", "target_index must be a 1-D tensor or sequence of ints, got a str"),
    ([2 ** 70], "target_index must be a 1-D tensor or sequence of ints that fit in int64"),
])
def test_index_lists_that_are_not_integers_are_refused(index, message):
    target = torch.zeros(4, 2)
    with pytest.raises(TypeError, match=f"transfer_rows_: {message}"):
        vocabxfer.transfer_rows_(target, index, torch.ones(4, 2), [0, 1][:len(index)] or [0])
    assert torch.equal(target, torch.zeros(4, 2))


def test_numpy_float_indices_are_refused_and_numpy_ints_accepted():
    numpy = pytest.importorskip("numpy")
    target = torch.zeros(4, 2)
    with pytest.raises(TypeError, match="transfer_rows_: source_index must hold integers, got "
                                        "values of type float64"):
        vocabxfer.transfer_rows_(target, [0, 1], torch.ones(4, 2), numpy.array([0.0, 1.0]))
    assert torch.equal(target, torch.zeros(4, 2))
    vocabxfer.transfer_rows_(target, numpy.array([3], dtype=numpy.int32), torch.ones(4, 2),
                             numpy.array([0]))
    assert target[3].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("name,args", [
    ("target", ([[0.0]], [0], torch.ones(1, 1), [0])),
    ("source", (torch.zeros(1, 1), [0], [[1.0]], [0])),
])
def test_matrices_must_be_tensors(name, args):
    with pytest.raises(TypeError, match=f"transfer_rows_: {name} must be a torch.Tensor, got list"):
        vocabxfer.transfer_rows_(*args)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_inference_tensor_target_is_refused_before_any_write(implementation):
    with torch.inference_mode():
        target = torch.zeros(4, 2)
    source = torch.ones(4, 2)
    with pytest.raises(ValueError, match="transfer_rows_: target is an inference tensor"):
        IMPLEMENTATIONS[implementation](target, torch.tensor([0, 1]), source, torch.tensor([0, 1]))
    assert torch.equal(target, torch.zeros(4, 2))
    # Inside inference mode it is an ordinary write.
    with torch.inference_mode():
        IMPLEMENTATIONS[implementation](target, torch.tensor([0, 1]), source, torch.tensor([0, 1]))
    assert target[:2].tolist() == [[1.0, 1.0], [1.0, 1.0]]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_as_strided_target_with_overlapping_rows_is_refused(device, implementation):
    storage = torch.zeros(20, device=device)
    target = storage.as_strided((5, 4), (2, 1))  # row r covers elements 2r .. 2r+3
    with pytest.raises(ValueError, match="transfer_rows_: target has elements that share memory"):
        IMPLEMENTATIONS[implementation](target, torch.tensor([0, 1], device=device),
                                        torch.ones(3, 4, device=device),
                                        torch.tensor([0, 1], device=device))
    assert torch.equal(storage, torch.zeros(20, device=device))
    # Rows that step past each other are fine, even with gaps between them.
    spaced = storage.as_strided((4, 4), (5, 1))
    IMPLEMENTATIONS[implementation](spaced, torch.tensor([3], device=device),
                                    torch.ones(1, 4, device=device),
                                    torch.tensor([0], device=device))
    assert storage[15:19].tolist() == [1.0] * 4 and storage[19] == 0


def test_meta_tensors_are_checked_by_shape_only():
    # Meta tensors have no memory (every data_ptr is 0): the op must not
    # claim that they share it.
    target = torch.empty(10, 4, device="meta")
    vocabxfer.transfer_rows_(target, torch.tensor([1, 2], device="meta"),
                             torch.empty(6, 4, device="meta"), torch.tensor([0, 5], device="meta"))
    with pytest.raises(ValueError, match="target rows have width 4 but source rows have width 3"):
        vocabxfer.transfer_rows_(target, torch.tensor([1], device="meta"),
                                 torch.empty(6, 3, device="meta"), torch.tensor([0], device="meta"))


@pytest.mark.parametrize("index", [[0, True], (False, 1), [0, np.bool_(True)]],
                         ids=["list", "tuple", "numpy-bool"])
def test_a_bool_among_list_indices_is_refused(index):
    with pytest.raises(TypeError, match=r"transfer_rows_: target_index\[\d\] is the bool"):
        vocabxfer.transfer_rows_(torch.zeros(3, 2), index, torch.ones(3, 2), [0, 1])


def test_a_uint64_index_past_int64_is_named_by_its_value():
    huge = np.array([1, 2 ** 64 - 1], dtype=np.uint64)
    with pytest.raises(IndexError, match=r"source_index\[1\] = 18446744073709551615 does not "
                                         "fit in int64"):
        vocabxfer.transfer_rows_(torch.zeros(3, 2), [0, 1], torch.ones(3, 2), huge)
