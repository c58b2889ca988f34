"""The three ways the ops read their indices: from the host (checked there,
one asynchronous copy to a GPU), from the target's device (checked there,
one synchronisation), and already checked by the caller (indices_checked).
Each gives the same rows bit for bit; a bad call never writes; a plan's own
indices are checked once and again after an in-place change."""

import pytest
import torch

import vocabxfer
from vocabxfer import match_vocab, plan_initialisation
from vocabxfer.ops import checks as _op_checks

from .conftest import BERT_SPECIALS, wordpiece_tokenizer

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def transfer_case(generator, target_rows=300, source_rows=400, width=40, pairs=150):
    source = torch.randn(source_rows, width, generator=generator)
    target_ids = torch.randperm(target_rows, generator=generator)[:pairs]
    source_ids = torch.randint(0, source_rows, (pairs,), generator=generator)
    target = torch.randn(target_rows, width, generator=generator).to(torch.bfloat16)
    return target, target_ids, source, source_ids


def segment_case(generator, segments=60, source_rows=200, width=24):
    lengths = torch.randint(1, 5, (segments,), generator=generator)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    source_ids = torch.randint(0, source_rows, (int(offsets[-1]),), generator=generator)
    weights = torch.rand(int(offsets[-1]), generator=generator) + 0.1
    target_ids = torch.randperm(segments * 2, generator=generator)[:segments]
    source = torch.randn(source_rows, width, generator=generator)
    target = torch.zeros(segments * 2, width)
    return target, target_ids, source, source_ids, offsets, weights


@pytest.mark.parametrize("placement", ["host", "device", "checked-host", "checked-device"])
def test_every_index_placement_writes_the_same_rows(device, generator, placement):
    target, target_ids, source, source_ids = transfer_case(generator)
    expected = target.clone()
    expected[target_ids] = source[source_ids].to(target.dtype)
    on = device if placement.endswith("device") else torch.device("cpu")
    moved = target.to(device)
    vocabxfer.transfer_rows_(moved, target_ids.to(on), source.to(device), source_ids.to(on),
                             indices_checked=placement.startswith("checked"))
    assert torch.equal(moved.cpu(), expected)


@pytest.mark.parametrize("placement", ["host", "device", "checked-host", "checked-device"])
def test_every_placement_averages_the_same_segments(device, generator, placement):
    target, target_ids, source, source_ids, offsets, weights = segment_case(generator)
    reference = target.clone()
    vocabxfer.segment_mean_(reference, target_ids, source, source_ids, offsets, weights)
    on = device if placement.endswith("device") else torch.device("cpu")
    moved = target.to(device)
    vocabxfer.segment_mean_(moved, target_ids.to(on), source.to(device), source_ids.to(on),
                            offsets.to(on), weights.to(on),
                            indices_checked=placement.startswith("checked"))
    assert torch.equal(moved.cpu(), reference)


@pytest.mark.parametrize("placement", ["host", "device"])
def test_a_bad_index_raises_before_anything_is_written(device, generator, placement,
                                                       error_paths_survive):
    target, target_ids, source, source_ids = transfer_case(generator)
    source_ids[-1] = source.shape[0]  # one past the end
    on = device if placement == "device" else torch.device("cpu")
    moved, before = target.to(device), target.clone()
    with pytest.raises(IndexError, match=r"source_index\[149\] = 400 is out of range"):
        vocabxfer.transfer_rows_(moved, target_ids.to(on), source.to(device), source_ids.to(on))
    assert torch.equal(moved.cpu(), before)
    segment = segment_case(generator)
    segment_target, offsets = segment[0].to(device), segment[4].clone()
    offsets[1] = 0  # an empty first segment
    with pytest.raises(ValueError, match="segment_mean_: segment 0 is empty"):
        vocabxfer.segment_mean_(segment_target, segment[1].to(on), segment[2].to(device),
                                segment[3].to(on), offsets.to(on), segment[5].to(on))
    assert not segment_target.any()


def test_an_index_on_another_device_is_refused_by_the_python_checks():
    # The fake (meta) and pure-torch kernels share these checks with the
    # compiled ones; an index may be on the target's device or the CPU only.
    target = torch.zeros(4, 2, device="meta")
    cpu_index, meta_index = torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64,
                                                                           device="meta")
    _op_checks.check_transfer_rows_args(target, cpu_index, target, cpu_index)
    with pytest.raises(ValueError, match="target_index is on cpu but source_index is on meta; "
                                         "pass every index on one device"):
        _op_checks.check_transfer_rows_args(target, cpu_index, target, meta_index)
    with pytest.raises(ValueError, match="target_index is on meta but target is on cpu; "
                                         "indices must be on the target's device or on the CPU"):
        _op_checks.check_transfer_rows_args(torch.zeros(4, 2), meta_index, torch.zeros(4, 2),
                                            meta_index)


# ---- a plan's own indices, checked once ------------------------------------

SOURCE = BERT_SPECIALS + ["the", "cat", "##s", "run", "##ning", "dog"]
TARGET = BERT_SPECIALS + ["the", "cats", "running", "dog", "xyz"]


def test_a_plan_checks_its_indices_once_and_again_after_a_change(generator):
    plan = plan_initialisation(match_vocab(wordpiece_tokenizer(SOURCE),
                                           wordpiece_tokenizer(TARGET)), init="fvt")
    source = torch.randn(len(SOURCE), 8, generator=generator)
    first = plan.apply(source)
    assert plan._checked is not None
    checked = plan._checked
    assert torch.equal(plan.apply(source), first)
    assert plan._checked is checked  # not checked again
    first_target = plan.copy_target_ids[0].clone()
    plan.copy_target_ids[0] = 10_000  # in place: the version moves
    with pytest.raises(IndexError, match=r"transfer_rows_: target_index\[0\] = 10000 is out "
                                         r"of range for target with \d+ rows"):
        plan.apply(source)
    original_offset, original_target = int(plan.segments.offsets[1]), int(first_target)
    plan.segments.offsets[1] = 0
    plan.copy_target_ids[0] = original_target
    with pytest.raises(ValueError, match="segment_mean_: segment 0 is empty"):
        plan.apply(source)
    plan.segments.offsets[1] = original_offset
    assert torch.equal(plan.apply(source), first)  # whole again: checked again, and valid
    plan.copy_source_ids = torch.full_like(plan.copy_source_ids, len(SOURCE))  # replaced
    with pytest.raises(IndexError, match=r"transfer_rows_: source_index\[0\] = \d+ is out of "
                                         r"range for source"):
        plan.apply(source)


# ---- the GPU paths: synchronisations -----------------------------------------

SYNCHRONISING_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def profiled_synchronisations(call) -> int:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        call()
        torch.cuda.synchronize()
    return sum(event.name in SYNCHRONISING_CALLS for event in profiler.events())


def synchronisations(call) -> int:
    """How many times `call` makes the host wait for the GPU: the CUDA
    runtime's synchronising calls in the profiler's record, less those of an
    empty call (the profiler's own and the closing synchronize; torch's sync
    debug mode does not see a synchronisation made inside an extension)."""
    call()  # warm: first-call set-up is not the op's cost
    return profiled_synchronisations(call) - profiled_synchronisations(lambda: None)


@cuda_only
def test_host_indices_never_wait_for_the_gpu_and_device_indices_once(generator):
    target, target_ids, source, source_ids = transfer_case(generator)
    target, source = target.cuda(), source.cuda()
    assert synchronisations(
        lambda: vocabxfer.transfer_rows_(target, target_ids, source, source_ids)) == 0
    on_gpu = target_ids.cuda(), source_ids.cuda()
    assert synchronisations(
        lambda: vocabxfer.transfer_rows_(target, on_gpu[0], source, on_gpu[1])) == 1
    assert synchronisations(
        lambda: vocabxfer.transfer_rows_(target, on_gpu[0], source, on_gpu[1],
                                         indices_checked=True)) == 0
    _, segment_ids, segment_source, piece_ids, offsets, weights = segment_case(generator)
    segment_target = torch.zeros(len(segment_ids) * 2, segment_source.shape[1], device="cuda")
    segment_source = segment_source.cuda()  # outside the count: a pageable copy waits
    assert synchronisations(lambda: vocabxfer.segment_mean_(
        segment_target, segment_ids, segment_source, piece_ids, offsets, weights)) == 0


def test_a_list_of_indices_joins_the_tensors_device():
    from vocabxfer.ops.rows import _as_index, _index_device

    meta = torch.empty(3, dtype=torch.int64, device="meta")
    on_cpu, on_meta = torch.empty(2, 2), torch.empty(2, 2, device="meta")
    assert _index_device(on_meta, [0, 1], meta) == torch.device("meta")
    # A tensor on neither the CPU nor the target's device: the list stays on
    # the CPU, so that the check names that tensor, not the list.
    assert _index_device(on_cpu, [0, 1], meta) == torch.device("cpu")
    assert _index_device(on_cpu, [0, 1], None, [2]) == torch.device("cpu")
    assert _as_index("op", "offsets", [0, 2, 3], torch.device("meta")).device.type == "meta"
    assert _as_index("op", "offsets", [0, 2, 3]).device.type == "cpu"


@cuda_only
def test_indices_on_two_devices_are_refused(error_paths_survive):
    target = torch.zeros(4, 2, device="cuda")
    with pytest.raises(ValueError, match="target_index is on cpu but source_index is on "
                                         "cuda:0; pass every index on one device"):
        vocabxfer.transfer_rows_(target, torch.tensor([0]), torch.ones(4, 2, device="cuda"),
                                 torch.tensor([0], device="cuda"))
