"""refine on torch.distributed, tested on the CPU with the gloo backend:
two processes give the rows one process gives from the same global batch
and seed; a rank that dies ends the job with one clear error on the
survivor, not a hang; under torchrun, rank 0 alone writes the folder."""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vocabxfer import match_vocab, refine, transfer_model

from .conftest import save_bert_folder, tiny_bert, wordpiece_tokenizer
from .test_refine import SOURCE, TARGET, TEXTS

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(steps=6, batch_size=8, precision="float32", show_progress=False)

RANK_PROGRAM = textwrap.dedent("""
    import copy, datetime, os, sys
    import torch, torch.distributed as dist
    sys.path.insert(0, {root!r})
    from tests.conftest import tiny_bert, wordpiece_tokenizer
    from tests.test_refine import SOURCE, TARGET, TEXTS
    from vocabxfer import VocabxferError, match_vocab, refine, transfer_model
    objectives = sys.modules["vocabxfer.refinement.objectives"]
    rank = int(os.environ["RANK"])
    backend, device = os.environ.get("BACKEND", "gloo"), os.environ.get("DEVICE", "cpu")
    if device == "cuda":
        # NCCL refuses two ranks on one GPU; gloo shares the first.
        device = f"cuda:{{rank}}" if backend == "nccl" else "cuda:0"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=30))
    teacher = tiny_bert(len(SOURCE), seed=3)
    student = copy.deepcopy(teacher)
    source, target = wordpiece_tokenizer(SOURCE), wordpiece_tokenizer(TARGET)
    transfer_model(student, source, target)
    if rank == 1 and os.environ.get("DIE_AT"):
        real, calls = objectives.word_loss, []
        def dying(*args, **kwargs):
            calls.append(1)
            if len(calls) == int(os.environ["DIE_AT"]):
                os._exit(1)
            return real(*args, **kwargs)
        objectives.word_loss = dying
    if os.environ.get("SHARD"):
        from vocabxfer.refinement.sharding import shard_body, is_sharded
        shard_body(student, torch.device(device))
        assert is_sharded(student)
        layer = student.bert.encoder.layer[0].attention.self.query.weight
        print("SHARD", tuple(layer.to_local().shape), tuple(layer.shape), flush=True)
        device = None
    before = student.get_input_embeddings().weight.detach().clone()
    try:
        refine(student, teacher, match_vocab(source, target), TEXTS, device=device, **{settings!r})
    except VocabxferError as error:
        unchanged = torch.equal(student.get_input_embeddings().weight, before)
        print("ERROR", error, "| unchanged:", unchanged, flush=True)
        # The group's gloo threads still wait on the dead peer; at interpreter
        # teardown they can abort the process ("terminate called without an
        # active exception") after refine has done its part. Leave at once.
        os._exit(3)
    torch.save(student.get_input_embeddings().weight.detach().cpu(),
               {out!r} + f"/rows-{{rank}}.pt")
    dist.destroy_process_group()
""")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_ranks(tmp_path, extra_env=None, world=2):
    program = tmp_path / "rank.py"
    program.write_text(RANK_PROGRAM.format(root=str(ROOT), settings=SETTINGS,
                                           out=str(tmp_path)))
    port = free_port()
    processes = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
                   **(extra_env or {}))
        processes.append(subprocess.Popen([sys.executable, str(program)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
    return [(process.wait(timeout=240), process.stdout.read()) for process in processes]


# (backend, device): gloo on the CPU everywhere; on a GPU host gloo with the
# model on the GPU (gloo all-reduces CUDA tensors), and NCCL where there are
# two GPUs (NCCL refuses two ranks on one GPU: "Duplicate GPU detected").
BACKENDS = [("gloo", "cpu")]
if torch.cuda.is_available():
    BACKENDS.append(("gloo", "cuda"))
    if torch.cuda.device_count() >= 2:
        BACKENDS.append(("nccl", "cuda"))


@pytest.mark.slow
@pytest.mark.parametrize("backend,device", BACKENDS, ids=["-".join(b) for b in BACKENDS])
def test_two_ranks_train_the_rows_one_process_trains(tmp_path, backend, device):
    outcomes = run_ranks(tmp_path, {"BACKEND": backend, "DEVICE": device})
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    teacher = tiny_bert(len(SOURCE), seed=3)
    student = tiny_bert(len(SOURCE), seed=3)
    source, target = wordpiece_tokenizer(SOURCE), wordpiece_tokenizer(TARGET)
    transfer_model(student, source, target)
    start = student.get_input_embeddings().weight.detach().clone()
    refine(student, teacher, match_vocab(source, target), TEXTS, device=device, **SETTINGS)
    alone = student.get_input_embeddings().weight.detach().cpu()
    first, second = (torch.load(tmp_path / f"rows-{rank}.pt") for rank in (0, 1))
    assert torch.equal(first, second)
    assert not torch.equal(alone, start)
    assert torch.allclose(first, alone, rtol=0, atol=1e-5), (first - alone).abs().max()


@pytest.mark.slow
def test_a_body_sharded_across_two_ranks_trains_the_same_rows(tmp_path):
    # FSDP2 shards each layer (half of its rows on each rank); the frozen
    # body's outputs, and so the trained rows, are those of the whole body.
    outcomes = run_ranks(tmp_path, {"SHARD": "1"})
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    hidden = tiny_bert(len(SOURCE), seed=3).config.hidden_size
    assert f"SHARD ({hidden // 2}, {hidden}) ({hidden}, {hidden})" in outcomes[0][1]
    teacher = tiny_bert(len(SOURCE), seed=3)
    student = tiny_bert(len(SOURCE), seed=3)
    source, target = wordpiece_tokenizer(SOURCE), wordpiece_tokenizer(TARGET)
    transfer_model(student, source, target)
    refine(student, teacher, match_vocab(source, target), TEXTS, device="cpu", **SETTINGS)
    alone = student.get_input_embeddings().weight.detach()
    first, second = (torch.load(tmp_path / f"rows-{rank}.pt") for rank in (0, 1))
    assert torch.equal(first, second)
    assert torch.allclose(first, alone, rtol=0, atol=1e-5), (first - alone).abs().max()


def test_sharding_needs_a_process_group_and_refine_refuses_a_device_for_it():
    from vocabxfer import ModelError, VocabxferError
    from vocabxfer.refinement.sharding import shard_body, transformer_layers

    model = tiny_bert(len(SOURCE), seed=3)
    assert transformer_layers(model) is model.bert.encoder.layer
    with pytest.raises(VocabxferError, match="shard_body: no torch.distributed process group"):
        shard_body(model)
    with pytest.raises(ModelError, match="found no stack of transformer layers"):
        transformer_layers(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_job_with_one_error(tmp_path):
    outcomes = run_ranks(tmp_path, {"DIE_AT": "3"})
    (survivor_code, survivor_output), (dead_code, _) = outcomes
    assert dead_code == 1
    assert survivor_code == 3, survivor_output
    assert "refine: rank 0 of 2 lost contact with the other ranks" in survivor_output
    assert "| unchanged: True" in survivor_output
    assert not list(tmp_path.glob("rows-*.pt"))


@pytest.mark.slow
def test_under_torchrun_rank_0_alone_writes_the_folder(tmp_path, corpus_file):
    save_bert_folder(tmp_path / "source", SOURCE)
    wordpiece_tokenizer(TARGET).save(str(tmp_path / "target.json"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", str(free_port()), "-m", "vocabxfer", "transfer",
               "--model", str(tmp_path / "source"), "--tokenizer", str(tmp_path / "target.json"),
               "--refine-corpus", str(corpus_file), "--refine-steps", "3", "--out", str(out)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.count(f"wrote {out}") == 1  # rank 0 alone reports what it wrote
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == \
        sorted(["source", "target.json", "out", "corpus.txt"])


def test_a_multi_rank_job_needs_a_given_tokenizer(monkeypatch, tmp_path, corpus_file):
    from vocabxfer import RefineSettings, VocabxferError
    from vocabxfer.refinement import distributed
    from vocabxfer.cli.jobs import transfer_to_folder

    monkeypatch.setattr(distributed, "current", lambda: distributed.Ranks(0, 2))
    with pytest.raises(VocabxferError, match="every rank must read the same target tokenizer"):
        transfer_to_folder(tmp_path / "model", tmp_path / "out", corpus=[corpus_file],
                           refinement=RefineSettings(steps=2))
    assert not (tmp_path / "out").exists()


def fake_gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_under_torchrun_a_bare_cuda_is_the_process_own_gpu(monkeypatch):
    from vocabxfer.models.devices import resolve_device

    fake_gpus(monkeypatch, 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("cuda") == torch.device("cuda")  # one process: torch's current GPU
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # a named GPU stays named
    monkeypatch.setenv("LOCAL_RANK", "3")  # four processes on two GPUs share them
    assert resolve_device("cuda") == torch.device("cuda", 1)


@pytest.mark.parametrize("local_world,expected", [("2", "nccl"), ("3", "gloo")])
def test_torchrun_processes_join_with_nccl_only_when_each_has_its_own_gpu(
        monkeypatch, local_world, expected):
    from vocabxfer.refinement import distributed

    fake_gpus(monkeypatch, 2)
    import datetime

    joined, devices_set, timeouts = [], [], []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, timeout: joined.append(backend) or
                        timeouts.append(timeout))
    monkeypatch.setattr(torch.cuda, "set_device", devices_set.append)
    monkeypatch.setenv("WORLD_SIZE", local_world)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    distributed.join_launched_job(torch.device("cuda", 1))
    assert joined == [expected]
    assert devices_set == ([torch.device("cuda", 1)] if expected == "nccl" else [])
    joined.clear()
    distributed.join_launched_job(torch.device("cpu"), timeout_seconds=7)
    assert joined == ["gloo"]
    # torch's default would wait 30 minutes for a stopped peer.
    assert timeouts == [datetime.timedelta(seconds=300), datetime.timedelta(seconds=7)]


# ---- ranks that disagree, or stop: one error, within the timeout ----------------------

def launch_ranks(tmp_path, arguments_of_rank, world=2, timeout=5):
    """`vocabxfer transfer` in `world` processes of one job (the environment
    torchrun gives), each with its own command line."""
    port = free_port()
    processes = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
        command = [sys.executable, "-m", "vocabxfer", "transfer", "--dist-timeout",
                   str(timeout)] + arguments_of_rank(rank)
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    return processes


@pytest.fixture
def job_inputs(tmp_path, corpus_file):
    save_bert_folder(tmp_path / "source", SOURCE)
    wordpiece_tokenizer(TARGET).save(str(tmp_path / "target.json"))
    wordpiece_tokenizer(TARGET[:-2]).save(str(tmp_path / "other.json"))
    return ["--model", str(tmp_path / "source"), "--refine-corpus", str(corpus_file),
            "--out", str(tmp_path / "out")]


@pytest.mark.slow
def test_ranks_given_different_settings_all_stop_with_one_line_naming_them(tmp_path,
                                                                             job_inputs):
    def arguments(rank):
        return job_inputs + ["--tokenizer", str(tmp_path / ("target.json" if rank == 0
                                                            else "other.json")),
                             "--refine-steps", str(3 + rank), "--seed", str(rank)]

    outcomes = [(process.wait(timeout=240), process.communicate())
                for process in launch_ranks(tmp_path, arguments)]
    for code, (out, err) in outcomes:
        assert code == 2, err[-2000:]
        line = err.strip().splitlines()[-1]
        assert "were given different settings" in line and "Traceback" not in err, err
        for setting in ("refinement.steps (rank 1 differs", "initialisation.seed (rank 1",
                        "refinement.seed (rank 1", "the target tokenizer (rank 1"):
            assert setting in line, line
        assert "wrote" not in out
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_stopped_peer_ends_the_job_within_the_timeout(tmp_path, job_inputs):
    import signal
    import time

    processes = launch_ranks(tmp_path, lambda rank: job_inputs + [
        "--tokenizer", str(tmp_path / "target.json"), "--refine-steps", "3"], timeout=5)
    survivor, stopped = processes
    stopped.send_signal(signal.SIGSTOP)
    started = time.monotonic()
    try:
        code = survivor.wait(timeout=120)
        waited = time.monotonic() - started
    finally:
        stopped.kill()
        stopped.wait()
    err = survivor.stderr.read()
    assert code == 2, err[-2000:]
    assert "Traceback" not in err and "--dist-timeout" in err.strip().splitlines()[-1], err
    assert waited < 90, waited
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_transfer_without_refinement_refuses_to_run_on_several_processes(tmp_path,
                                                                           job_inputs):
    outcomes = [(process.wait(timeout=240), process.communicate()) for process in
                launch_ranks(tmp_path, lambda rank: job_inputs[:2] + job_inputs[4:] + [
                    "--tokenizer", str(tmp_path / "target.json")])]
    for code, (_, err) in outcomes:
        assert code == 2 and "only refinement runs on several" in err, err[-2000:]
    assert not (tmp_path / "out").exists()
