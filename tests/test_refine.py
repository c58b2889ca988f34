"""refine: embedding-only distillation on tiny models built here. Copied rows
stay bit-exact, new rows move and the loss falls, a tied output layer
follows, runs repeat with a seed, and every bad input is refused before any
weight changes."""

import copy
import sys

import pytest
import torch

from vocabxfer import (CorpusError, ModelError, OutputError, VocabxferError,
                       RefineSettings, load_vocab, match_vocab, refine, transfer_model)
from vocabxfer.cli.main import main
from vocabxfer.refinement.loop import Refinement, trainable_rows
from vocabxfer.refinement.objectives import OBJECTIVES
from vocabxfer.training.corpus import read_texts

from .conftest import BERT_SPECIALS, CORPUS, save_bert_folder, tiny_bert, wordpiece_tokenizer

SOURCE = BERT_SPECIALS + ["the", "cat", "##s", "sat", "on", "mat", "dog", "##ing", "run", "a",
                          "and", "red", "was", "are", "##n"]
TARGET = BERT_SPECIALS + ["the", "cats", "sat", "on", "mat", "dogs", "running", "a", "and",
                          "red", "was", "are", "jumping", "sitting", "log"]
TEXTS = [line for line in CORPUS if line.isascii()]


@pytest.fixture
def pair():
    teacher = tiny_bert(len(SOURCE), seed=3)
    student = copy.deepcopy(teacher)
    source, target = wordpiece_tokenizer(SOURCE), wordpiece_tokenizer(TARGET)
    transfer_model(student, source, target)
    return teacher, student, source, target


def test_new_rows_learn_and_copied_rows_stay_bit_exact(pair):
    teacher, student, source, target = pair
    before = student.get_input_embeddings().weight.detach().clone()
    teacher_before = copy.deepcopy(teacher.state_dict())
    student_before = copy.deepcopy(student.state_dict())
    result = refine(student, teacher, match_vocab(source, target), TEXTS, steps=40, lr=1e-2,
                    batch_size=8,
                    show_progress=False)
    after = student.get_input_embeddings().weight.detach()
    new = trainable_rows(match_vocab(source, target), "new")
    copied = torch.ones(len(TARGET), dtype=torch.bool)
    copied[new] = False
    assert new.tolist() == [TARGET.index(token) for token in
                            ("cats", "dogs", "running", "jumping", "sitting", "log")]
    assert torch.equal(after[copied], before[copied])
    assert not torch.equal(after[new], before[new])
    assert result.trained_rows == len(new) and len(result.losses) == 40
    assert sum(result.losses[-5:]) < sum(result.losses[:5])
    # The teacher is only read; the student's body is unchanged.
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(tensor, teacher_before[name]), name
    for name, tensor in student.state_dict().items():
        if "word_embeddings" not in name and "decoder.weight" not in name:
            assert torch.equal(tensor, student_before[name]), name
    assert all(parameter.requires_grad for parameter in student.parameters())


def test_a_tied_output_layer_follows(pair):
    teacher, student, source, target = pair
    refine(student, teacher, match_vocab(source, target), TEXTS, steps=5, batch_size=8,
           show_progress=False)
    assert student.get_output_embeddings().weight is student.get_input_embeddings().weight


def test_trainable_all_moves_every_row_and_runs_repeat(pair):
    teacher, student, source, target = pair
    other = copy.deepcopy(student)
    before = student.get_input_embeddings().weight.detach().clone()
    refine(student, teacher, match_vocab(source, target), TEXTS, steps=5, batch_size=8,
           trainable="all",
           seed=1, show_progress=False)
    refine(other, teacher.get_input_embeddings().weight, match_vocab(source, target), TEXTS,
           steps=5,
           batch_size=8, trainable="all", seed=1, show_progress=False)
    after = student.get_input_embeddings().weight.detach()
    assert (after != before).any(-1).sum() > len(TARGET) // 2
    assert torch.equal(after, other.get_input_embeddings().weight)


def test_texts_are_passages_or_files(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("one passage\n\ntwo passage\n", encoding="utf-8")
    second.write_text("three passage\n", encoding="utf-8")
    lines = ["one passage", "two passage", "three passage"]
    assert read_texts(["the cat", " ", "a dog"]) == ["the cat", "a dog"]
    assert read_texts(str(first)) == lines[:2]
    assert read_texts([first, second]) == lines
    # Strings are passages, even the ones that name files: a corpus whose
    # lines are paths trains on those lines, never on the files they name.
    assert read_texts([str(first), str(second)]) == [str(first), str(second)]
    assert read_texts([str(first), "a passage"]) == [str(first), "a passage"]


def test_summary_compares_the_two_ends_of_a_short_run():
    run = Refinement(steps=4, trained_rows=3, losses=[0.8, 0.6, 0.4, 0.2])
    assert "loss 0.7000 -> 0.3000" in str(run)
    assert "loss 0.5000 -> 0.5000" in str(Refinement(steps=1, trained_rows=3, losses=[0.5]))


def test_plot(pair, tmp_path):
    pytest.importorskip("matplotlib")
    teacher, student, source, target = pair
    result = refine(student, teacher, match_vocab(source, target), TEXTS, steps=3, batch_size=8,
                    show_progress=False, plot=tmp_path / "loss.png")
    assert result.plot == tmp_path / "loss.png" and (tmp_path / "loss.png").stat().st_size > 1000


def other_architecture():
    from transformers import GPT2Config, GPT2Model

    return GPT2Model(GPT2Config(vocab_size=len(SOURCE), n_embd=32, n_layer=1, n_head=2))


BAD = [
    ("steps 0", dict(steps=0), VocabxferError, "refine: steps must be a positive int, got 0"),
    ("lr 0", dict(lr=0), VocabxferError, r"refine: lr must be a finite number in \(0, 1\], got 0"),
    ("trainable", dict(trainable="some"), VocabxferError,
     "refine: trainable 'some' is not one of new, all"),
    ("empty corpus", dict(texts=[]), CorpusError,
     r"refine: the corpus has 0 passage\(s\) with text; expected at least 8"),
    ("short corpus", dict(texts=["the cat", " ", "a dog"]), CorpusError,
     r"refine: the corpus has 2 passage\(s\) with text"),
    ("no passage holds a trained token", dict(texts=["the mat was red", "a mat and a cat"] * 4),
     CorpusError, "refine: none of the 8 passages read has a token whose row is being refined "
     r"\(within its first 32 tokens\)"),
    ("different architectures", dict(teacher=other_architecture), ModelError,
     r"refine: the student \(BertForMaskedLM\) and the teacher \(GPT2Model\) are different "
     "architectures"),
    ("source tokenizer does not fit", dict(source=SOURCE + ["extra1", "extra2"]), ModelError,
     "refine: the source tokenizer .* has 22 tokens but the source embeddings have 20 rows"),
    ("lr inf", dict(lr=float("inf")), VocabxferError,
     r"refine: lr must be a finite number in \(0, 1\], got inf"),
    ("lr nan", dict(lr=float("nan")), VocabxferError, r"refine: lr must be a finite number"),
    ("lr 1e30", dict(lr=1e30), VocabxferError, r"refine: lr must be a finite number in \(0, 1\]"),
    ("layers (99,)", dict(layers=(99,)), VocabxferError,
     r"refine: layers \[99\] do not exist; the model's hidden states are numbered 0 "
     r"\(embeddings\) to 1"),
    ("layers ()", dict(layers=()), VocabxferError,
     r"refine: layers must be a non-empty sequence of layer numbers"),
    ("layers 'last'", dict(layers="last"), VocabxferError, r"refine: layers must be"),
    ("seed -1", dict(seed=-1), VocabxferError, r"refine: seed must be an int in \[0, 2\*\*63\)"),
    ("NaN in a teacher row", dict(teacher=lambda: nan_row(tiny_bert(len(SOURCE), seed=3), 7)),
     ModelError, r"refine: the teacher's input embeddings hold NaN or infinite values in 1 "
     r"row\(s\) \(the first: row 7\)"),
    ("NaN in a copied student row", dict(student=lambda model: nan_row(model, 5)), ModelError,
     r"refine: the student's input embeddings hold NaN or infinite values in 1 row\(s\) "
     r"\(the first: row 5\)"),
    ("meta-device student", dict(student=lambda model: model.to("meta")), ModelError,
     "refine: the student's input embeddings are on the meta device and hold no weights"),
    ("plot under a file", dict(plot="/etc/passwd/x.png"), OutputError,
     "passwd is a file, so .* cannot be created under it"),
    ("plot in an unknown format", dict(plot="loss.xyz"), VocabxferError,
     "has no image suffix matplotlib writes"),
    ("plot is a folder", dict(plot="/tmp"), VocabxferError,
     "refine: the plot path /tmp is a folder"),
]


def nan_row(model, row):
    with torch.no_grad():
        model.get_input_embeddings().weight[row, 3] = float("nan")
    return model


@pytest.mark.parametrize("name,change,error,message", BAD, ids=[case[0] for case in BAD])
def test_bad_input_changes_nothing(pair, name, change, error, message):
    teacher, student, source, target = pair
    if "teacher" in change:
        teacher = change.pop("teacher")()
    if "source" in change:
        source = wordpiece_tokenizer(change.pop("source"))
    if "student" in change:
        student = change.pop("student")(student)
    texts = change.pop("texts", TEXTS)
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(error, match=message):
        refine(student, teacher, match_vocab(source, target), texts, show_progress=False, **change)
    for key, tensor in student.state_dict().items():
        assert tensor.is_meta or torch.allclose(tensor, before[key], rtol=0, atol=0,
                                                equal_nan=True), key


def test_a_diverging_loss_stops_with_the_weights_as_they_were(pair, monkeypatch):
    objectives = sys.modules["vocabxfer.refinement.objectives"]

    teacher, student, source, target = pair
    real_loss, calls = objectives.word_loss, []

    def diverging(*args, **kwargs):
        calls.append(1)
        total, count = real_loss(*args, **kwargs)
        return (total * float("nan"), count) if len(calls) == 4 else (total, count)

    monkeypatch.setattr(objectives, "word_loss", diverging)
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(VocabxferError, match=r"refine: the loss diverged at step 4 \(loss nan, "
                                             r"lr 0.001\); stopped with the model's weights as "
                                             "they were before refine"):
        refine(student, teacher, match_vocab(source, target), TEXTS, steps=10, batch_size=8,
               show_progress=False)
    for key, tensor in student.state_dict().items():
        assert torch.equal(tensor, before[key]), key


def test_a_failing_plot_leaves_the_weights_as_they_were(pair, monkeypatch, tmp_path):
    refine_module = sys.modules["vocabxfer.refinement.loop"]

    teacher, student, source, target = pair

    def failing_plot(*args):
        raise OSError("disk full")

    monkeypatch.setattr(refine_module, "plot_losses", failing_plot)
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(OSError, match="disk full"):
        refine(student, teacher, match_vocab(source, target), TEXTS, steps=3, batch_size=8,
               show_progress=False, plot=tmp_path / "loss.png")
    for key, tensor in student.state_dict().items():
        assert torch.equal(tensor, before[key]), key
def test_cli_refines(tmp_path, corpus_file, capsys):
    save_bert_folder(tmp_path / "source", SOURCE)
    out = tmp_path / "out"
    assert main(["transfer", "--model", str(tmp_path / "source"), "--corpus", str(corpus_file),
                 "--out", str(out), "--vocab-size", "120", "--refine-steps", "3",
                 "--piece-weights", "first"]) == 0
    printed = capsys.readouterr().out
    assert "refined" in printed and "embedding rows for 3 steps" in printed
    assert (out / "model.safetensors").is_file()


def test_cli_refines_for_a_time_budget(tmp_path, corpus_file, capsys):
    save_bert_folder(tmp_path / "source", SOURCE)
    out = tmp_path / "out"
    assert main(["transfer", "--model", str(tmp_path / "source"), "--corpus", str(corpus_file),
                 "--out", str(out), "--vocab-size", "120", "--refine-seconds", "1"]) == 0
    assert "refined" in capsys.readouterr().out and (out / "model.safetensors").is_file()
    assert main(["transfer", "--model", str(tmp_path / "source"), "--corpus", str(corpus_file),
                 "--out", str(tmp_path / "out2"), "--refine-seconds", "0"]) == 2
    assert "refine: seconds must be a positive, finite number, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_horizon_is_the_step_count_or_the_budget(monkeypatch):
    budget = sys.modules["vocabxfer.refinement.budget"]
    clock = FakeClock()
    monkeypatch.setattr(budget.time, "perf_counter", clock)
    assert [budget.Horizon(4, None).progress(done) for done in range(5)] == \
        [0, 0.25, 0.5, 0.75, 1]
    timed = budget.Horizon(None, deadline=110.0)
    assert timed.progress(0) == 0  # a budget always allows one step
    clock.now = 104.0
    assert timed.progress(3) == pytest.approx(0.4)
    clock.now = 111.0
    assert timed.progress(9) >= 1
    both = budget.Horizon(10, deadline=200.0)  # whichever is further
    assert both.progress(5) == 0.5


def test_a_budget_runs_steps_and_decays_the_rate(pair, monkeypatch):
    refine_module = sys.modules["vocabxfer.refinement.loop"]
    clock = FakeClock()
    monkeypatch.setattr(refine_module.time, "perf_counter", clock)
    real_step, rates = torch.optim.Adam.step, []

    def step_and_tick(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        clock.now += 1.0  # each step takes one (fake) second
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_and_tick)
    teacher, student, source, target = pair
    result = refine(student, teacher, match_vocab(source, target), TEXTS, seconds=5, lr=1e-2,
                    batch_size=8,
                    show_progress=False)
    assert result.steps == len(result.losses) == 5
    assert rates == pytest.approx([1e-2, 8e-3, 6e-3, 4e-3, 2e-3])


def test_without_steps_or_seconds_the_default_budget_of_the_device_runs(pair, monkeypatch):
    refine_module = sys.modules["vocabxfer.refinement.loop"]
    words, next_token = OBJECTIVES["words"], OBJECTIVES["next-token"]
    assert words.seconds_for(torch.device("cpu")) == 180.0
    assert words.seconds_for(torch.device("cuda")) == 30.0
    assert next_token.seconds_for(torch.device("cpu")) == 600.0
    assert next_token.seconds_for(torch.device("cuda")) == 60.0
    clock = FakeClock()
    monkeypatch.setattr(refine_module.time, "perf_counter", clock)
    monkeypatch.setitem(OBJECTIVES["words"].default_seconds, "cpu", 4.0)
    real_step = torch.optim.Adam.step

    def step_and_tick(self, *args, **kwargs):
        clock.now += 1.0  # each step takes one (fake) second
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_and_tick)
    teacher, student, source, target = pair
    result = refine(student, teacher, match_vocab(source, target), TEXTS, batch_size=8,
                    show_progress=False)
    assert result.steps == 4


def test_cli_refine_runs_the_default_budget(tmp_path, corpus_file, capsys, monkeypatch):
    monkeypatch.setitem(OBJECTIVES["words"].default_seconds, "cpu", 1.0)
    save_bert_folder(tmp_path / "source", SOURCE)
    out = tmp_path / "out"
    assert main(["transfer", "--model", str(tmp_path / "source"), "--corpus", str(corpus_file),
                 "--out", str(out), "--vocab-size", "120", "--refine", "--plot",
                 str(tmp_path / "loss.png")]) == 0
    assert "refined" in capsys.readouterr().out and (tmp_path / "loss.png").is_file()
    assert (out / "model.safetensors").is_file()


def test_a_causal_lm_with_a_byte_level_tokenizer_without_pad_refines():
    from transformers import LlamaConfig, LlamaForCausalLM

    from .conftest import byte_level_text, byte_level_tokenizer

    letters = [byte_level_text(char) for char in " abcdefghijklmnopqrstuvwxyz"]
    source = byte_level_tokenizer(["<|endoftext|>"] + letters)
    target = byte_level_tokenizer(["<|endoftext|>"] + letters + ["Ġc", "Ġca", "Ġcat"],
                                  [("Ġ", "c"), ("Ġc", "a"), ("Ġca", "t")])
    assert load_vocab(target).special_tokens_map.get("pad") is None
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(load_vocab(source)), hidden_size=32,
                         intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, tie_word_embeddings=True)
    teacher = LlamaForCausalLM(config).eval()
    student = copy.deepcopy(teacher)
    transfer_model(student, source, target)
    before = student.get_input_embeddings().weight.detach().clone()
    result = refine(student, teacher, match_vocab(source, target), TEXTS, steps=5, batch_size=8,
                    show_progress=False)
    after = student.get_input_embeddings().weight.detach()
    assert result.steps == 5 and not torch.equal(after[-3:], before[-3:])
    assert torch.equal(after[:-3], before[:-3])
    assert student.get_output_embeddings().weight.data_ptr() == after.data_ptr()  # still tied


def test_a_nan_in_the_body_is_named_not_blamed_on_the_learning_rate():
    teacher = tiny_bert(len(SOURCE), seed=3)
    student = copy.deepcopy(teacher)
    source, target = wordpiece_tokenizer(SOURCE), wordpiece_tokenizer(TARGET)
    transfer_model(student, source, target)
    with torch.no_grad():
        student.bert.encoder.layer[0].attention.self.query.weight[0, 0] = float("nan")
    before = student.get_input_embeddings().weight.detach().clone()
    with pytest.raises(ModelError, match=r"bert.encoder.layer.0.attention.self.query.weight "
                                         r"holds NaN or infinite values") as raised:
        refine(student, teacher, match_vocab(source, target), TEXTS, steps=2, show_progress=False)
    assert "lr" not in str(raised.value)
    assert torch.equal(student.get_input_embeddings().weight, before)


def test_text_to_keep_is_for_causal_models_and_its_share_is_checked(pair):
    teacher, student, source, target = pair
    with pytest.raises(VocabxferError, match="text to keep is read by the next-token objective "
                                             "only; the words objective does not use it"):
        refine(student, teacher, match_vocab(source, target), TEXTS, steps=2,
               show_progress=False, keep=["the mat"])
    for share in (1.0, -0.1, "a"):
        with pytest.raises(VocabxferError, match="keep_share must be a number in"):
            RefineSettings(keep_share=share)
