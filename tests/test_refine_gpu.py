"""refine on a GPU: fixed-shape batches, losses read every few steps, and
the step replayed as a CUDA graph give the losses and rows of the CPU's
step-by-step run (float32, so that only rounding differs). Skipped without
CUDA."""

import copy
import sys

import pytest
import torch

from vocabxfer import match_vocab, refine, transfer_model

from vocabxfer.refinement import graphed_step

from .conftest import tiny_bert, wordpiece_tokenizer
from .test_objectives import TEXTS as LM_TEXTS, causal_lm, tokenizers
from .test_refine import SOURCE, TARGET, TEXTS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def encoder_case():
    teacher = tiny_bert(len(SOURCE), seed=3)
    student = copy.deepcopy(teacher)
    source, target = wordpiece_tokenizer(SOURCE), wordpiece_tokenizer(TARGET)
    transfer_model(student, source, target)
    return teacher, student, source, target, TEXTS


def encoder_halves_case():
    """The encoder on passages long enough to cut in halves (10-16 words)."""
    from .test_job_measure import passages

    return encoder_case()[:4] + (passages(60),)


def causal_lm_case():
    source, target = tokenizers()
    teacher = causal_lm(len(source.get_vocab()), tied=False, bias=True, seed=1)
    student = causal_lm(len(target.get_vocab()), tied=False, bias=True, seed=1)
    transfer_model(student, source, target)
    return teacher, student, source, target, LM_TEXTS


@pytest.mark.parametrize("case,objective", [(encoder_case, "auto"),
                                            (encoder_halves_case, "words+halves"),
                                            (causal_lm_case, "auto")],
                         ids=["encoder", "encoder, words+halves", "causal LM"])
def test_graphed_gpu_steps_match_the_cpus(case, objective, monkeypatch):
    teacher, student, source, target, texts = case()
    captured = []
    real_capture = graphed_step.GraphedStep.capture

    def recording_capture(self, picks):
        real_capture(self, picks)
        captured.append(self.graph is not None)

    monkeypatch.setattr(graphed_step.GraphedStep, "capture", recording_capture)
    runs = {}
    for name, device, graphs in (("cpu", "cpu", False), ("gpu eager", "cuda", False),
                                 ("gpu graphed", "cuda", True)):
        monkeypatch.setattr(sys.modules["vocabxfer.refinement.backend"], "CUDA_GRAPHS", graphs)
        model = copy.deepcopy(student)
        result = refine(model, teacher.to(device), match_vocab(source, target), texts, steps=30,
                        lr=1e-2,
                        batch_size=8, device=device, precision="float32", show_progress=False,
                        objective=objective)
        runs[name] = (result.losses, model.get_input_embeddings().weight.detach().cpu())
    assert captured == [True]  # only the graphed run captured, and it succeeded
    cpu_losses, cpu_rows = runs["cpu"]
    for name in ("gpu eager", "gpu graphed"):
        losses, rows = runs[name]
        assert len(losses) == 30
        assert torch.allclose(torch.tensor(losses), torch.tensor(cpu_losses), rtol=1e-3,
                              atol=1e-5), name
        assert torch.allclose(rows, cpu_rows, rtol=1e-3, atol=1e-4), name
