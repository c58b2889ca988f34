"""The job measure and refinement that serves it: search between the halves
of held-out passages (recall@1, MRR, a paired bootstrap interval), the
passage-level objectives, and refinement's validation checks, which keep
the best rows seen (the zero-shot start included)."""

import copy
import json
import random
import time

import pytest
import torch

from vocabxfer import VocabxferError, load_vocab, match_vocab, refine
from vocabxfer.refinement import keep_best, loop, retrieval
from vocabxfer.refinement.fidelity import FidelityProbe
from vocabxfer.refinement.objectives import (OBJECTIVES, CONTRASTIVE_TEMPERATURE, Mix,
                                             Trained, contrastive_loss, encoder_loss,
                                             halves_loss, similarity_loss)
from vocabxfer.refinement.passage_pool import PassagePool, cut_in_half
from vocabxfer.refinement.retrieval import halves, paired_interval, search


from .test_refine import TARGET, pair  # noqa: F401  (the fixture)

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "run", "a", "and", "red", "was", "are"]


def passages(count, seed=0):
    """`count` distinct passages of 10 to 16 words, drawn with a seed."""
    chooser = random.Random(seed)
    vocabulary = WORDS + ["cats", "dogs", "running", "jumping", "sitting", "log"]
    texts = set()
    while len(texts) < count:
        texts.add(" ".join(chooser.choice(vocabulary) for _ in range(chooser.randint(10, 16))))
    return sorted(texts)


def test_halves_cut_at_the_middle_word_and_skip_short_passages():
    queries, documents = halves(["one two  three four five six seven eight", "too short here",
                                 "a b c d e f g h i"])
    assert queries == ["one two  three four", "a b c d"]
    assert documents == ["five six seven eight", "e f g h i"]


def test_ranks_count_ties_against_the_query(monkeypatch):
    vectors = {"q": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
               "d": torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])}
    monkeypatch.setattr(retrieval, "embed",
                        lambda model, vocab, texts, what="target": vectors[texts[0]])
    ranks = search(None, None, ["q", "q2", "q3"], ["d", "d2", "d3"])
    # Query 0: its document ties with document 1 at the top: rank 2.
    # Query 1 scores 0 with its own document, tied with document 0 and
    # beaten by document 2: rank 3. Query 2 scores 0 with its own, beaten
    # by documents 0 and 1: rank 3.
    assert ranks.hits.tolist() == [0.0, 0.0, 0.0]
    assert ranks.reciprocal.tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 3])
    assert ranks.mrr == pytest.approx((1 / 2 + 2 / 3) / 3)


def test_a_query_finds_the_same_text_first(pair):
    teacher, _, source, _ = pair
    texts = passages(60)
    ranks = search(teacher, load_vocab(source), texts, texts, "source")
    assert len(ranks.hits) == 60 and ranks.recall == 1.0 and ranks.mrr == 1.0
    queries, documents = halves(texts)
    ranks = search(teacher, load_vocab(source), queries, documents, "source")
    assert 0 < ranks.mrr < 1 and len(ranks.hits) == 60


def test_the_paired_interval_holds_the_mean_difference():
    first = torch.tensor([0.5, 1.0, 0.25, 1.0] * 25)
    assert paired_interval(first, first) == (0.0, 0.0, 0.0)
    mean, low, high = paired_interval(first + 0.1, first)
    assert mean == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    noisy = first + torch.linspace(-0.2, 0.3, 100)
    mean, low, high = paired_interval(noisy, first)
    assert low < mean < high and mean == pytest.approx(0.05, abs=1e-6)


def test_passage_losses_are_zero_when_the_student_is_the_teacher():
    vectors = torch.nn.functional.normalize(torch.randn(6, 8, generator=torch.Generator()
                                                        .manual_seed(0)), dim=-1)
    total, count = similarity_loss(vectors, vectors)
    assert float(total) == 0 and int(count) == 6
    shuffled = vectors[torch.tensor([1, 0, 2, 3, 4, 5])]
    assert float(similarity_loss(shuffled, vectors)[0]) > 0
    # Contrastive: its own passage's teacher vector must win over the others.
    right = contrastive_loss(vectors, vectors)[0]
    wrong = contrastive_loss(shuffled, vectors)[0]
    assert float(right) < float(wrong)


def test_a_passage_is_cut_at_a_share_of_its_words_with_a_floor_per_half():
    text = "a b c d e f g h i j"
    assert cut_in_half(text, 0.3) == ("a b c d", "e f g h i j")  # 3 words raised to 4
    assert cut_in_half(text, 0.5) == ("a b c d e", "f g h i j")
    assert cut_in_half(text, 0.7) == ("a b c d e f", "g h i j")
    assert cut_in_half(text, 0.99) == ("a b c d e f", "g h i j")  # the document keeps 4
    assert cut_in_half("a b c d e f g", 0.5) is None  # too short for two halves of 4


def test_the_pool_reads_each_passages_halves_with_the_target_tokenizer(pair):
    _, _, source, target = pair
    texts = passages(30) + ["too short to cut"]
    is_trained = torch.ones(len(TARGET), dtype=torch.bool)
    source_vocab, target_vocab = load_vocab(source), load_vocab(target)
    pool = PassagePool(texts, source_vocab, target_vocab, is_trained, 32, pool_size=100,
                       seed=0, with_halves=True)
    assert pool.paired.tolist() == [len(text.split()) >= 8 for text in pool.passages]
    assert not pool.paired.all() and pool.paired.sum() == 30
    backend = target.backend_tokenizer if hasattr(target, "backend_tokenizer") else target
    shares = set()
    for row, text in enumerate(pool.passages):
        if not pool.paired[row]:
            continue
        query_ids = pool.queries.ids[row, :int(pool.queries.lengths[row])].tolist()
        document_ids = pool.documents.ids[row, :int(pool.documents.lengths[row])].tolist()
        # The halves are the passage's words, cut once at a word, each half
        # encoded alone (its own special tokens).
        words = text.split()
        cuts = [count for count in range(4, len(words) - 3)
                if backend.encode(" ".join(words[:count])).ids == query_ids
                and backend.encode(" ".join(words[count:])).ids == document_ids]
        assert cuts, text
        shares.add(cuts[0] / len(words))
    # The cut is drawn per passage: not every query has the same share.
    assert len(shares) > 3
    batch = pool.batch(torch.arange(len(pool)))
    assert batch.halves.query_ids.shape[0] == len(pool)
    assert batch.halves.paired.tolist() == pool.paired.tolist()
    # A pool without halves (the other objectives) reads none.
    plain = PassagePool(texts, source_vocab, target_vocab, is_trained, 32, pool_size=100, seed=0)
    assert plain.paired is None and plain.batch(torch.arange(4)).halves is None


def test_the_halves_loss_is_search_cross_entropy_both_ways(pair):
    """Against a loop: each half embedded alone by the model as it stands
    (mean of the last hidden states over its tokens, unit length), and the
    cross-entropy of its own other half among the batch's paired ones."""
    _, student, source, target = pair
    texts = passages(12) + ["too short to cut"]
    is_trained = torch.ones(len(TARGET), dtype=torch.bool)
    pool = PassagePool(texts, load_vocab(source), load_vocab(target), is_trained, 32,
                       pool_size=100, seed=0, with_halves=True)
    batch = pool.batch(torch.arange(len(pool)))
    table = student.get_input_embeddings().weight.detach()
    ids = torch.arange(len(TARGET))
    trained = Trained(rows=table.clone(), slot=ids.clone(), ids=ids)
    with torch.no_grad():
        total, count = halves_loss(batch, student.bert, table, trained)
    paired = [row for row in range(len(pool)) if pool.paired[row]]
    assert int(count) == len(paired) == 12

    def vector(side, row):
        ids = side.ids[row:row + 1, :int(side.lengths[row])]
        with torch.no_grad():
            hidden = student.bert(input_ids=ids).last_hidden_state[0]
        return torch.nn.functional.normalize(hidden.mean(0), dim=-1)

    queries = torch.stack([vector(pool.queries, row) for row in paired])
    documents = torch.stack([vector(pool.documents, row) for row in paired])
    logits = queries @ documents.T / CONTRASTIVE_TEMPERATURE
    labels = torch.arange(len(paired))
    expected = (torch.nn.functional.cross_entropy(logits, labels, reduction="sum") +
                torch.nn.functional.cross_entropy(logits.T, labels, reduction="sum")) / 2
    assert torch.allclose(total, expected, rtol=1e-4, atol=1e-4), (total, expected)
    # A passage too short to cut teaches nothing, and its rows stay finite.
    rows = table.clone().requires_grad_(True)
    total, _ = halves_loss(batch, student.bert, table,
                           Trained(rows=rows, slot=ids.clone(), ids=ids))
    total.backward()
    assert torch.isfinite(rows.grad).all() and rows.grad.abs().sum() > 0
    # The halves objective reads no teacher: the same loss with no source side.
    with torch.no_grad():
        mixed = encoder_loss(batch, student.bert, table, trained, None, (-1,),
                             Mix(words=0, halves=1))
    assert torch.allclose(mixed[0], total) and mixed[1] == count


def test_auto_learns_search_where_the_passages_can_be_cut_and_words_elsewhere(pair):
    teacher, student, source, target = pair
    token_map = match_vocab(source, target)
    long_result = refine(copy.deepcopy(student), teacher, token_map, passages(60), steps=2,
                         batch_size=8, show_progress=False, checks=0)
    assert long_result.objective == "halves"
    assert long_result.trained_rows == len(TARGET)  # every row, the copied ones too
    short = [" ".join(text.split()[:6]) for text in passages(60)]
    short_result = refine(copy.deepcopy(student), teacher, token_map, short, steps=2,
                          batch_size=8, show_progress=False, checks=0)
    assert short_result.objective == "words" and short_result.trained_rows == 6
    # Asked for by name, search over passages too short to cut is refused.
    with pytest.raises(VocabxferError, match="no passage read has the 8 words two halves"):
        refine(copy.deepcopy(student), teacher, token_map, short, steps=2, batch_size=8,
               objective="halves", show_progress=False, checks=0)


def test_fixed_shape_halves_give_the_loss_of_halves_cut_to_length(pair):
    """An accelerator pads every half to max_length (a 4-D mask under
    SDPA): the halves loss must not change."""
    _, student, source, target = pair
    texts = passages(20) + ["too short to cut"]
    is_trained = torch.ones(len(TARGET), dtype=torch.bool)
    table = student.get_input_embeddings().weight.detach()
    ids = torch.arange(len(TARGET))
    trained = Trained(rows=table.clone(), slot=ids.clone(), ids=ids)
    losses = []
    for fixed_shape in (True, False):
        pool = PassagePool(texts, load_vocab(source), load_vocab(target), is_trained, 32,
                           pool_size=100, seed=0, with_halves=True)
        pool.to("cpu", fixed_shape=fixed_shape)
        batch = pool.batch(torch.arange(len(pool)))
        assert (batch.halves.query_ids.shape[1] == 32) == fixed_shape
        with torch.no_grad():
            losses.append(halves_loss(batch, student.bert, table, trained))
    (fixed, fixed_count), (cut, cut_count) = losses
    assert fixed_count == cut_count == 20
    assert torch.allclose(fixed, cut, rtol=1e-5, atol=1e-5), (fixed, cut)


@pytest.mark.parametrize("objective", ["contrastive", "similarity", "words+contrastive",
                                       "words+similarity", "halves", "words+halves"])
@pytest.mark.parametrize("trainable", [None, "new"])
def test_every_encoder_objective_trains_the_rows_it_is_given(pair, objective, trainable):
    """The distillation objectives train the new rows and leave the copied
    ones bit-exact; the search objectives train every row unless told
    trainable="new"."""
    teacher, student, source, target = pair
    before = student.get_input_embeddings().weight.detach().clone()
    result = refine(student, teacher, match_vocab(source, target), passages(40), steps=6,
                    batch_size=8, objective=objective, show_progress=False, trainable=trainable)
    after = student.get_input_embeddings().weight.detach()
    new = [TARGET.index(token) for token in ("cats", "dogs", "running", "jumping", "sitting",
                                             "log")]
    copied = [index for index in range(len(TARGET)) if index not in new]
    read = [TARGET.index(token) for token in ("the", "sat", "on", "red")]  # copied, and read
    every_row = trainable is None and OBJECTIVES[objective].default_trainable == "all"
    assert every_row == (trainable is None and objective in ("halves", "words+halves"))
    if every_row:
        assert not torch.equal(after[read], before[read])
    else:
        assert torch.equal(after[copied], before[copied])
    assert not torch.equal(after[new], before[new])
    assert result.objective == objective and all(map(lambda x: x == x, result.losses))
    assert OBJECTIVES[objective].loss_name in str(result)


def scripted_scores(monkeypatch, scores):
    """Checks that score `scores` in turn (instead of searching)."""
    turn = iter(scores)

    def fake(objective, vocab, texts):
        return "MRR", len(texts), lambda model: next(turn)

    monkeypatch.setattr("vocabxfer.refinement.loop.job_score", fake)


def test_when_no_check_beats_the_start_the_start_is_kept(pair, monkeypatch):
    teacher, student, source, target = pair
    before = copy.deepcopy(student.state_dict())
    scripted_scores(monkeypatch, [0.5, 0.4, 0.3, 0.2, 0.1])
    result = refine(student, teacher, match_vocab(source, target), passages(400), steps=12,
                    batch_size=8, show_progress=False)
    assert [check.step for check in result.kept.checks] == [0, 3, 6, 9, 12]
    assert result.kept.kept_step == 0 and len(result.losses) == 12
    assert "no check on 40 validation passages beat the zero-shot start" in str(result)
    for key, tensor in student.state_dict().items():
        assert torch.equal(tensor, before[key]), key


def test_the_best_rows_seen_are_kept(pair, monkeypatch):
    teacher, student, source, target = pair
    texts, token_map = passages(400), match_vocab(source, target)
    kept_rows = {}
    real_check = keep_best.BestRows.check

    def remember(self, step):
        real_check(self, step)
        kept_rows[step] = [tensor.detach().clone() for tensor in self.trained]

    monkeypatch.setattr(keep_best.BestRows, "check", remember)
    scripted_scores(monkeypatch, [0.1, 0.2, 0.6, 0.3, 0.4])
    result = refine(student, teacher, token_map, texts, steps=12, batch_size=8,
                    objective="words", show_progress=False)
    assert result.kept.kept_step == 6
    assert "kept the rows of step 6 (MRR 0.1000 -> 0.6000 on 40 validation passages; 5 " \
        "checks took " in str(result)
    new = torch.tensor([TARGET.index(token) for token in
                        ("cats", "dogs", "running", "jumping", "sitting", "log")])
    after = student.get_input_embeddings().weight.detach()[new]
    assert torch.equal(after, kept_rows[6][0])
    assert not torch.equal(after, kept_rows[12][0])


@pytest.mark.parametrize("checks, one_check, seconds, affordable", [
    (4, 3.4, 60.0, 1),  # the demo: start and end only
    (4, 1.8, 180.0, 4),  # as asked
    (4, 100.0, 10.0, 1),  # the end is always checked
    (10, 0.5, 20.0, 5),  # 6 checks of 0.5 s fit 15% of 20 s
])
def test_a_time_budget_affords_the_checks_that_fit_its_share(checks, one_check, seconds,
                                                             affordable):
    assert loop.affordable_checks(checks, one_check, seconds) == affordable


def test_slow_checks_in_a_short_budget_are_fewer_and_say_so(pair, monkeypatch):
    teacher, student, source, target = pair

    def slow(objective, vocab, texts):
        def score(model):
            time.sleep(0.3)
            return 0.5
        return "MRR", len(texts), score

    monkeypatch.setattr("vocabxfer.refinement.loop.job_score", slow)
    result = refine(student, teacher, match_vocab(source, target), passages(400),
                    seconds=2.0, batch_size=8, show_progress=False)
    assert [check.step for check in result.kept.checks] == [0, result.steps]
    assert "2 checks took 1 s, as many as fit 15% of the time budget" in str(result)


def test_validation_passages_are_never_drawn_for_a_step(pair, monkeypatch):
    teacher, student, source, target = pair
    texts = passages(400)
    seen = {}
    real_pool = __import__("vocabxfer.refinement.loop", fromlist=["PassagePool"]).PassagePool

    def spying_pool(pool_passages, *args, **kwargs):
        seen["training"] = list(pool_passages)
        return real_pool(pool_passages, *args, **kwargs)

    def fake(objective, vocab, validation):
        seen["validation"] = list(validation)
        return "MRR", len(validation), lambda model: 0.0

    monkeypatch.setattr("vocabxfer.refinement.loop.PassagePool", spying_pool)
    monkeypatch.setattr("vocabxfer.refinement.loop.job_score", fake)
    refine(student, teacher, match_vocab(source, target), texts, steps=2, batch_size=8,
           show_progress=False)
    assert len(seen["validation"]) == 40
    assert not set(seen["validation"]) & set(seen["training"])
    assert len(seen["training"]) == 360


def test_a_failure_after_a_check_leaves_the_model_as_it_was(pair, monkeypatch):
    teacher, student, source, target = pair
    before = copy.deepcopy(student.state_dict())
    scripted_scores(monkeypatch, [0.1, 0.9, 0.2, 0.3, 0.4])
    objectives = __import__("vocabxfer.refinement.objectives", fromlist=["word_loss"])
    real_loss, calls = objectives.word_loss, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:
            raise RuntimeError("out of memory (simulated)")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(objectives, "word_loss", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        refine(student, teacher, match_vocab(source, target), passages(400), steps=12,
               batch_size=8, objective="words", show_progress=False)
    for key, tensor in student.state_dict().items():
        assert torch.equal(tensor, before[key]), key


def test_checks_are_checked():
    from vocabxfer import RefineSettings

    assert RefineSettings(checks=0).checks == 0
    for bad in (-1, 101, 2.5, True, "4"):
        with pytest.raises(VocabxferError, match="refine: checks must be an int from 0 to 100"):
            RefineSettings(checks=bad)


def test_the_fidelity_report_of_an_encoder_has_the_search(pair):
    teacher, student, source, target = pair
    held_out = passages(60, seed=1)
    probe = FidelityProbe(teacher, load_vocab(source), held_out)
    report = probe.report(student, load_vocab(target))
    job = report.job
    assert job.queries == 60 and 0 < job.source_mrr <= 1 and 0 < job.zero_shot_mrr <= 1
    assert job.zero_shot_vs_source[1] <= job.zero_shot_vs_source[0] <= \
        job.zero_shot_vs_source[2]
    refine(student, teacher, match_vocab(source, target), passages(40), steps=3, batch_size=8,
           show_progress=False)
    probe.add_refined(report, student, load_vocab(target))
    assert report.refined is not None and job.refined_mrr is not None
    assert job.refined_vs_zero_shot is not None
    text = str(report)
    assert "search between the halves of 60 held-out passages (recall@1 / MRR): source" in text
    assert "; refined " in text
    figures = json.loads(report.to_json())
    assert figures["job"]["queries"] == 60 and len(figures["job"]["refined_vs_source"]) == 3
    assert figures["finite"] is True
