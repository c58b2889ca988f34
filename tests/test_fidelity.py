"""fidelity: held-out passages (a small, uniform, distinct slice), the
measures (1 for a model compared with itself; lower for a worse start),
and transfer_to_folder's report, with the held-out passages never trained
on."""

import copy
import json
import random
import sys

import pytest

from vocabxfer import RefineSettings, TokenizerTraining, load_vocab, transfer_model
from vocabxfer.refinement.fidelity import REPORT_FILE, FidelityProbe
from vocabxfer.training.corpus import hold_out
from vocabxfer.cli.jobs import transfer_to_folder

from .conftest import save_bert_folder, tiny_bert, wordpiece_tokenizer
from .test_objectives import causal_lm, tokenizers
from .test_refine import SOURCE, TARGET

WORDS = ["the", "cat", "cats", "sat", "on", "mat", "dog", "dogs", "running", "a", "and", "red",
         "was", "are", "jumping", "sitting", "log"]


def sentences(count, seed=0):
    chooser = random.Random(seed)
    return list(dict.fromkeys(" ".join(chooser.choice(WORDS) for _ in range(chooser.randint(4, 12)))
                              for _ in range(count)))


def test_hold_out_is_a_small_uniform_distinct_slice():
    passages = [f"passage {number}" for number in range(5000)]
    held = hold_out(passages, count=200, seed=1)
    assert len(held) == len(set(held)) == 200 and set(held) <= set(passages)
    repeated = hold_out(passages[:400] * 10, count=200, seed=1)
    assert len(repeated) == len(set(repeated)) > 100  # never a passage twice
    assert hold_out(passages, count=200, seed=1) != hold_out(passages, count=200, seed=2)
    # Uniform: the sample is not the head of the corpus.
    assert sum(int(text.split()[1]) for text in held) / 200 > 1000
    assert len(hold_out(passages[:500], count=200)) == 50  # at most a tenth
    assert hold_out(passages[:150], count=200) == []  # too small to spare 20


def test_a_model_compared_with_itself_is_at_one():
    source = wordpiece_tokenizer(SOURCE)
    model = tiny_bert(len(SOURCE))
    texts = sentences(40)
    probe = FidelityProbe(model, load_vocab(source), texts)
    cosine, ratio = probe.measure(model, load_vocab(source))
    assert cosine == pytest.approx(1.0, abs=1e-5) and ratio == 1.0
    lm_source, _ = tokenizers()
    lm = causal_lm(len(load_vocab(lm_source)), tied=True)
    lm_probe = FidelityProbe(lm, load_vocab(lm_source), texts)
    assert lm_probe.causal and lm_probe.source_bpb > 0
    bpb_ratio, lm_ratio = lm_probe.measure(lm, load_vocab(lm_source))
    assert bpb_ratio == pytest.approx(1.0, abs=1e-6) and lm_ratio == 1.0


def test_a_worse_start_measures_worse():
    source, target = wordpiece_tokenizer(SOURCE), wordpiece_tokenizer(TARGET)
    teacher = tiny_bert(len(SOURCE), seed=3)
    texts = sentences(60)
    probe = FidelityProbe(teacher, load_vocab(source), texts)
    figures = {}
    for init in ("fvt", "random"):
        student = copy.deepcopy(teacher)
        transfer_model(student, source, target, init=init)
        figures[init], ratio = probe.measure(student, load_vocab(target))
    assert figures["fvt"] > figures["random"] and 0 < figures["random"] < 1
    assert ratio < 1  # cats, dogs, running... are one token in the target


def test_transfer_reports_fidelity_on_passages_it_never_trains_on(tmp_path, monkeypatch):
    save_bert_folder(tmp_path / "source", SOURCE)
    corpus = tmp_path / "corpus.txt"
    passages = sentences(400)
    corpus.write_text("\n".join(passages) + "\n", encoding="utf-8")
    jobs = sys.modules["vocabxfer.cli.jobs"]
    seen = {}
    real_refine, real_train = jobs.refine, jobs.train_tokenizer

    def spy_refine(*args, **kwargs):
        seen["refined on"] = set(args[3])
        return real_refine(*args, **kwargs)

    def spy_train(*args, **kwargs):
        seen["excluded"] = set(kwargs["exclude"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(jobs, "refine", spy_refine)
    monkeypatch.setattr(jobs, "train_tokenizer", spy_train)
    result = transfer_to_folder(tmp_path / "source", tmp_path / "out", corpus=[corpus],
                                training=TokenizerTraining(vocab_size=60),
                                refinement=RefineSettings(steps=5), show_progress=False)
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert report["measure"] == "word cosine" and 0 < report["zero_shot"] <= 1
    assert 0 < report["refined"] <= 1 and report["passages"] == result.fidelity.passages > 0
    assert "fidelity on" in str(result) and REPORT_FILE in str(result)
    assert len(seen["excluded"]) == len(passages) // 10
    assert not seen["excluded"] & seen["refined on"]


def test_no_fidelity_when_asked_or_without_text(tmp_path):
    save_bert_folder(tmp_path / "source", SOURCE)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences(400)) + "\n", encoding="utf-8")
    wordpiece_tokenizer(TARGET).save(str(tmp_path / "target.json"))
    result = transfer_to_folder(tmp_path / "source", tmp_path / "out", corpus=[corpus],
                                training=TokenizerTraining(vocab_size=60), fidelity=False,
                                refinement=RefineSettings(steps=2),
                                show_progress=False)
    assert result.fidelity is None and not (tmp_path / "out" / REPORT_FILE).exists()
    # A tokenizer and no text: nothing to measure on.
    result = transfer_to_folder(tmp_path / "source", tmp_path / "out2",
                                tokenizer=tmp_path / "target.json", show_progress=False)
    assert result.fidelity is None and not (tmp_path / "out2" / REPORT_FILE).exists()


def test_passages_the_target_tokenizer_cuts_are_left_out():
    """A passage the target reads only in part would count bytes it never
    predicted: the figure is the one over the passages both read whole."""
    from vocabxfer.refinement.fidelity import MAX_TOKENS, WORDS_PER_PASSAGE

    from .test_objectives import SOURCE as LETTERS_AND_THE, TARGET as WITH_CAT

    # The probe's source merges " cat" into one token; its target spells it
    # in four, so 48 words of " cat" overflow the target's token limit only.
    short, long = tokenizers()[1], tokenizers()[0]
    assert len(load_vocab(long)) <= len(load_vocab(short))
    model = causal_lm(len(WITH_CAT), tied=True)
    cut = " cat" * WORDS_PER_PASSAGE
    assert len(long.encode(cut).ids) >= MAX_TOKENS > len(short.encode(cut).ids)
    whole = ["the dog sat on the mat", "a cat and a dog", "the red log was there"] * 10
    everything = FidelityProbe(model, load_vocab(short), whole + [cut])
    assert len(everything.texts) == len(whole) + 1
    only_whole = FidelityProbe(model, load_vocab(short), whole)
    assert everything.measure(model, load_vocab(long)) == \
        pytest.approx(only_whole.measure(model, load_vocab(long)), rel=1e-9)
    assert LETTERS_AND_THE == WITH_CAT[:len(LETTERS_AND_THE)]


def test_a_figure_that_is_not_finite_is_written_as_strict_json():
    from vocabxfer.refinement.fidelity import Fidelity

    def refuse(constant):
        raise ValueError(f"bare {constant} is not JSON")

    report = Fidelity(measure="bpb ratio", passages=20, token_ratio=0.8,
                      zero_shot=float("nan"), refined=float("inf"), source_bpb=1.2)
    document = json.loads(report.to_json(), parse_constant=refuse)
    assert document["zero_shot"] is None and document["refined"] is None
    assert document["finite"] is False and document["source_bpb"] == 1.2
    honest = json.loads(Fidelity(measure="word cosine", passages=20, token_ratio=1.1,
                                 zero_shot=0.9).to_json(), parse_constant=refuse)
    assert honest["finite"] is True and honest["zero_shot"] == 0.9
