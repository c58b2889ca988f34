"""passage_pool: passages tokenised once by both sides, tokens aligned to
whitespace words by character span, drawn by trained tokens, gathered into
batches, and pooled word by word."""

import random

import numpy as np

import pytest
import torch

from vocabxfer import VocabxferError, load_vocab, match_vocab

from vocabxfer.refinement import passage_pool
from vocabxfer.refinement.passage_pool import (WORD, WORDS_PER_TOKEN, PassagePool, encode_side,
                                               first_words, pool_words, rust_tokenizer,
                                               shared_cuts, texts_token_words)
from vocabxfer.refinement.loop import trainable_rows

from .conftest import BERT_SPECIALS, CORPUS, byte_level_text, byte_level_tokenizer, \
    wordpiece_tokenizer

SOURCE = BERT_SPECIALS + ["the", "cat", "##s", "sat", "on", "mat", "dog", "##ing", "run", "a",
                          "and", "red", "was", "are", "##n"]
TARGET = BERT_SPECIALS + ["the", "cats", "sat", "on", "mat", "dogs", "running", "a", "and",
                          "red", "was", "are", "jumping", "sitting", "log"]
TEXTS = [line for line in CORPUS if line.isascii()]


def pool_for(texts, max_length=32, pool_size=1000, source=SOURCE, target=TARGET, align="words"):
    source = load_vocab(wordpiece_tokenizer(source))
    target = load_vocab(wordpiece_tokenizer(target))
    is_trained = torch.zeros(len(target), dtype=torch.bool)
    is_trained[trainable_rows(match_vocab(source, target), "new")] = True
    return PassagePool(texts, source, target, is_trained, max_length, pool_size=pool_size,
                       seed=0, align=align)


def token_words(text, offsets, special):
    """texts_token_words for one text: (word of each token or -1, words)."""
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    words, counts = texts_token_words([text], np.zeros(len(spans), dtype=np.int64), spans,
                                      np.asarray(special, dtype=np.int64))
    return words, int(counts[0])


def loop_alignment(text, offsets, special):
    """The rule written as a plain loop (the previous implementation's):
    each token goes to the first word whose span it overlaps."""
    spans = [match.span() for match in WORD.finditer(text)]
    words, w = [], 0
    for (start, end), is_special in zip(offsets, special):
        if is_special or end <= start:
            words.append(-1)
            continue
        while w < len(spans) and spans[w][1] <= start:
            w += 1
        words.append(w if w < len(spans) and spans[w][0] < end else -1)
    return words


def test_tokens_align_to_words_by_character_span():
    backend = rust_tokenizer(load_vocab(wordpiece_tokenizer(SOURCE)), 32, "source")
    encoding = backend.encode("cats sat", add_special_tokens=True)
    assert encoding.tokens == ["[CLS]", "cat", "##s", "sat", "[SEP]"]
    words, count = token_words("cats sat", encoding.offsets, encoding.special_tokens_mask)
    assert words.tolist() == [-1, 0, 0, 1, -1] and count == 2


@pytest.mark.parametrize("family", ["wordpiece", "byte-level"])
def test_a_side_encodes_many_passages_as_the_loop_does_one_by_one(family, monkeypatch):
    if family == "wordpiece":
        tokenizer = wordpiece_tokenizer(SOURCE)
    else:
        tokenizer = byte_level_tokenizer(
            ["<pad>"] + [byte_level_text(char) for char in " abcdefghijklmnopqrstuvwxyz.,"])
    # Up to 40 characters read by at most 24 tokens: some passages are cut.
    backend = rust_tokenizer(load_vocab(tokenizer), 24, "source")
    rng = random.Random(1)
    texts = ["".join(rng.choice("abc  .,\t") for _ in range(rng.randint(0, 40)))
             for _ in range(300)]
    side = encode_side(backend, texts, 24)
    assert (side.lengths == 24).any() and (side.lengths < 24).any()
    for row, text in enumerate(texts):
        encoding = backend.encode(text, add_special_tokens=True)
        count = len(encoding.ids)
        words = loop_alignment(text, encoding.offsets, encoding.special_tokens_mask)
        assert int(side.lengths[row]) == count
        assert side.ids[row, :count].tolist() == encoding.ids
        assert side.words[row].tolist() == words + [-1] * (24 - count), text
        assert int(side.word_counts[row]) == max(words, default=-1) + 1
        assert side.spans[row, :count].tolist() == [
            list(span) if word >= 0 else [-1, -1]
            for span, word in zip(encoding.offsets, words)]
    monkeypatch.setattr(passage_pool, "ENCODE_CHUNK", 7)  # chunks that split the passages
    chunked = encode_side(backend, texts, 24)
    for name in ("ids", "words", "lengths", "word_counts", "spans"):
        assert torch.equal(getattr(chunked, name), getattr(side, name)), name


def test_passages_are_drawn_by_how_many_trained_tokens_they_hold():
    # Trained rows: cats, dogs, running, jumping, sitting, log; "cat" and
    # "dog" are [UNK] to the target, a copied row.
    pool = pool_for(TEXTS[:6])
    assert pool.passages == ["the dog sat on the log", "running and jumping and sitting",
                             "dogs and cats are running"]
    assert pool.weights.tolist() == [1, 3, 3]
    assert sorted(pool.draw(10).tolist()) == [0, 1, 2]  # no repeats in a batch
    draws = [int(pool.draw(1)) for _ in range(700)]
    assert 50 < draws.count(0) < 150  # 100 expected
    again = pool_for(TEXTS[:6])
    again.draw(10)
    assert draws == [int(again.draw(1)) for _ in range(700)]  # seeded


def test_only_the_first_max_length_tokens_count():
    # [CLS] the [UNK] [SEP]: the log is cut off; [CLS] running and [SEP].
    pool = pool_for(TEXTS[:6], max_length=4)
    assert pool.passages == ["running and jumping and sitting", "dogs and cats are running"]
    assert pool.weights.tolist() == [1, 1]


def test_a_large_corpus_is_sampled_from_a_pool():
    pool = pool_for(TEXTS, pool_size=12)
    assert 0 < len(pool.passages) <= 12 and set(pool.passages) <= set(TEXTS)


def test_a_batch_gathers_both_sides():
    pool = pool_for(TEXTS[:6])
    batch = pool.batch(torch.tensor([2, 0]))
    # dogs and cats are running: the source splits dogs and cats in two.
    target = wordpiece_tokenizer(TARGET).encode("dogs and cats are running")
    source = wordpiece_tokenizer(SOURCE).encode("dogs and cats are running")
    assert batch.target_ids[0, :len(target.ids)].tolist() == target.ids
    assert batch.source_ids[0, :len(source.ids)].tolist() == source.ids
    assert batch.source_ids.shape == (2, len(source.ids)) == batch.source_words.shape
    assert batch.source_mask[0].tolist() == [1] * len(source.ids)
    the_log = wordpiece_tokenizer(SOURCE).encode("the dog sat on the log").ids
    assert batch.source_mask[1].tolist() == [1] * len(the_log) + [0] * (
        len(source.ids) - len(the_log))
    assert batch.source_words[0].tolist() == [-1, 0, 0, 1, 2, 2, 3, 4, 4, 4, -1]
    assert batch.width == 6


def test_fixed_shape_batches_pad_to_max_length_and_the_pools_words():
    pool = pool_for(TEXTS[:6]).to("cpu", fixed_shape=True)
    cut = pool_for(TEXTS[:6])
    picks = torch.tensor([2, 0])
    fixed, batch = pool.batch(picks), cut.batch(picks)
    assert fixed.fixed_shape and not batch.fixed_shape
    assert fixed.target_ids.shape == fixed.source_ids.shape == (2, 32)
    assert fixed.width == max(int(pool.source.word_counts.max()),
                              int(pool.target.word_counts.max())) >= batch.width
    for name in ("source_ids", "source_mask", "source_words", "target_ids", "target_mask",
                 "target_words"):
        padded, cut_one = getattr(fixed, name), getattr(batch, name)
        length = cut_one.shape[1]
        assert padded[:, :length].long().tolist() == cut_one.long().tolist(), name
        padding = {"source_words": -1, "target_words": -1}.get(name, 0)
        assert (padded[:, length:].long() == padding).all(), name


def test_picks_follow_the_draws_a_few_steps_at_a_time():
    pool, again = pool_for(TEXTS[:6]), pool_for(TEXTS[:6])
    stream = pool.picks(2, lambda picks: picks[::1], ahead=3)
    drawn = [next(stream).tolist() for _ in range(7)]
    assert drawn == [again.draw(2).tolist() for _ in range(7)]
    # Each rank's share of the same global draw.
    first, second = pool_for(TEXTS[:6]).picks(2, lambda picks: picks[0::2]), \
        pool_for(TEXTS[:6]).picks(2, lambda picks: picks[1::2])
    global_draws = pool_for(TEXTS[:6])
    for _ in range(5):
        assert torch.cat([next(first), next(second)]).tolist() == global_draws.draw(2).tolist()


def test_pooling_averages_each_words_tokens():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    words = torch.tensor([[-1, 0, 0, 1], [0, -1, 2, 2]])
    means, counts = pool_words(hidden, words, 3)
    assert counts.tolist() == [[2, 1, 0], [1, 0, 2]]
    assert torch.equal(means[0, 0], hidden[0, 1:3].mean(0))
    assert torch.equal(means[0, 1], hidden[0, 3]) and torch.equal(means[0, 2], torch.zeros(3))
    assert torch.equal(means[1, 2], hidden[1, 2:4].mean(0))
    hidden.requires_grad_(True)
    pool_words(hidden, words, 3)[0].sum().backward()
    assert hidden.grad[0, 0].tolist() == [0, 0, 0] and hidden.grad[0, 1].tolist() == [0.5] * 3


def test_tokenizers_without_padding_or_with_padding_switched_on():
    """Many byte-level BPEs have no pad token (transformers refused to pad
    them); a tokenizer.json may switch padding on (to 128): neither matters."""
    tokens = ["<s>"] + [byte_level_text(char) for char in " abcdefghijklmnopqrstuvwxyz"]
    no_pad = byte_level_tokenizer(tokens)
    padded = byte_level_tokenizer(tokens)
    padded.enable_padding(pad_id=0, pad_token="<s>", length=128)
    texts = ["a cat sat on a mat", "dogs are running", "the log was red"] * 4
    for tokenizer in (no_pad, padded):
        vocab = load_vocab(tokenizer)
        is_trained = torch.ones(len(tokens), dtype=torch.bool)
        pool = PassagePool(texts, vocab, vocab, is_trained, 16, pool_size=100, seed=0)
        assert int(pool.target.lengths.max()) == 16
        assert pool.target.ids.shape == (len(texts), 16)


def test_long_passages_are_cut_to_what_max_length_reaches():
    long_text = " ".join(["cats and dogs"] * 4000)
    cut = first_words(long_text, WORDS_PER_TOKEN * 32)
    assert long_text.startswith(cut) and len(cut.split()) == WORDS_PER_TOKEN * 32
    assert first_words("a  b ", 5) == "a  b "
    pool = pool_for([long_text] * 8, max_length=32)
    assert long_text.startswith(pool.passages[0]) and int(pool.target.word_counts.max()) <= 30
    # What matters: the cut loses nothing the tokenizer reads within max_length.
    target = load_vocab(wordpiece_tokenizer(TARGET))
    whole = encode_side(passage_pool.rust_tokenizer(target, 32, "target"), [long_text], 32)
    assert torch.equal(pool.target.ids[0], whole.ids[0])


# ---- pieces both tokenizations cut alike ------------------------------------

def spans(*pairs):
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def one_passage_cuts(first, second):
    """shared_cuts of a single passage's two tokenizations."""
    mine, theirs = shared_cuts(first[None], second[None])
    return mine[0], theirs[0]


def test_pieces_are_cut_where_both_sides_start_a_token():
    # "cats sat": one side reads cat|s sat, the other cats sat; specials (-1) in none.
    first = spans((-1, -1), (0, 3), (3, 4), (5, 8), (-1, -1))
    second = spans((-1, -1), (0, 4), (5, 8), (-1, -1))
    mine, theirs = one_passage_cuts(first, second)
    assert mine.tolist() == [-1, 0, 0, 1, -1] and theirs.tolist() == [-1, 0, 1, -1]


def test_a_piece_only_one_side_read_whole_is_dropped():
    # Truncated: the first side stops inside "newreq" (new|re), the second reads it whole.
    first = spans((0, 4), (5, 8), (8, 10))
    second = spans((0, 4), (5, 11), (12, 15))
    mine, theirs = one_passage_cuts(first, second)
    assert mine.tolist() == [0, -1, -1] and theirs.tolist() == [0, -1, -1]
    # Truncated between words: the last word the shorter side read is kept.
    first = spans((0, 4), (5, 8), (8, 11))
    mine, theirs = one_passage_cuts(first, second)
    assert mine.tolist() == [0, 1, 1] and theirs.tolist() == [0, 1, -1]
    # Nothing shared: no pieces.
    assert [p.tolist() for p in one_passage_cuts(spans((-1, -1)), second)] == [[-1], [-1, -1, -1]]


def loop_shared_cuts(first, second):
    """The rule passage by passage (the previous implementation's), as the
    reference the vectorised one must match."""
    real_first, real_second = first[:, 0] >= 0, second[:, 0] >= 0
    if not real_first.any() or not real_second.any():
        return np.full(len(first), -1), np.full(len(second), -1)
    cuts = np.intersect1d(first[real_first, 0], second[real_second, 0])
    a, b = first[real_first], second[real_second]
    ends = int(a[:, 1].max()), int(b[:, 1].max())
    closing = None
    if ends[0] == ends[1]:
        closing = ends[0]
    else:
        longer, end = (a, ends[1]) if ends[0] > ends[1] else (b, ends[0])
        later = longer[:, 0] >= end
        if later.any() and not (longer[~later, 1] > end).any():
            closing = int(longer[later, 0].min())
    if closing is not None:
        cuts = np.append(cuts[cuts < closing], closing)

    def piece(spans, real):
        number = np.searchsorted(cuts, spans[:, 0], side="right") - 1
        return np.where(real & (number >= 0) & (number < len(cuts) - 1), number, -1)

    return piece(first, real_first), piece(second, real_second)


def random_tokenization(rng, text_length, tokens):
    """Spans of a random tokenization of a text's prefix: token starts on
    random cuts, a few tokens without text (-1), padding after `tokens`."""
    starts = np.sort(rng.choice(np.arange(1, text_length), size=rng.integers(0, text_length - 1),
                                replace=False))
    bounds = np.concatenate([[0], starts, [text_length]])
    pieces = np.stack([bounds[:-1], bounds[1:]], axis=1)[:rng.integers(0, len(bounds))]
    pieces = pieces[rng.random(len(pieces)) > 0.1]  # gaps: whitespace no token covers
    out = np.full((tokens, 2), -1, dtype=np.int64)
    rows = rng.permutation(tokens)[:min(len(pieces), tokens - 2)]
    out[np.sort(rows)] = pieces[:len(rows)]
    return out


def test_every_passage_at_once_cuts_as_one_passage_at_a_time():
    rng = np.random.default_rng(0)
    passages, tokens = 400, 12
    first = np.stack([random_tokenization(rng, 20, tokens) for _ in range(passages)])
    second = np.stack([random_tokenization(rng, 20, tokens + 3) for _ in range(passages)])
    first[5], second[6] = -1, -1  # a side with no token that has text
    mine, theirs = shared_cuts(first, second)
    kept = 0
    for row in range(passages):
        expected = loop_shared_cuts(first[row], second[row])
        assert mine[row].tolist() == expected[0].tolist(), row
        assert theirs[row].tolist() == expected[1].tolist(), row
        kept += int((expected[0] >= 0).any())
    assert kept > passages // 4  # the cases are not all empty (174 of 400 have pieces)


def test_the_pool_aligns_by_pieces_on_both_sides():
    pool = pool_for(["the cats sat on the mat", "dogs running on a log"], align="spans")
    source, target = pool.source, pool.target
    for row in range(len(pool)):
        # The same pieces on both sides, numbered alike.
        assert set(source.words[row].tolist()) - {-1} == set(target.words[row].tolist()) - {-1}
        assert int(source.word_counts[row]) == int(target.words[row].max()) + 1
    # "cats" is one target token and two source tokens (cat ##s): one piece.
    row = pool.passages.index("the cats sat on the mat")
    assert target.words[row, :8].tolist() == [-1, 0, 1, 2, 3, 4, 5, -1]
    assert source.words[row, :9].tolist() == [-1, 0, 1, 1, 2, 3, 4, 5, -1]


def test_with_specials_the_first_and_last_special_tokens_pair_up():
    pool = pool_for(["the cats sat on the mat"], align="spans+specials")
    assert pool.target.words[0, :8].tolist() == [6, 0, 1, 2, 3, 4, 5, 7]
    assert pool.source.words[0, :9].tolist() == [6, 0, 1, 1, 2, 3, 4, 5, 7]


@pytest.mark.parametrize("unit", ["!?", "한국어", " \u3000"], ids=["punctuation", "cjk",
                                                                   "spaces"])
def test_text_without_spaces_is_cut_to_what_the_tokens_can_reach(unit):
    from vocabxfer.refinement.passage_pool import SPACE_ALLOWANCE, within_reach

    line = unit * 1_000_000
    cut = within_reach(line, words=128, tokens=32, longest=12)
    budget = 2 * 32 * 12
    assert line.startswith(cut) and 0 < len(cut) <= budget * SPACE_ALLOWANCE
    assert sum(not char.isspace() for char in cut) <= budget
    # Ordinary text is cut by words as before, not by characters.
    text = " ".join(["word"] * 300)
    assert within_reach(text, words=128, tokens=32, longest=12) == first_words(text, 128)


def test_a_pool_of_megabyte_lines_without_spaces_reads_only_their_reach():
    from vocabxfer.refinement.passage_pool import longest_token

    source = load_vocab(wordpiece_tokenizer(SOURCE))
    target = load_vocab(wordpiece_tokenizer(TARGET))
    trained = torch.ones(len(target), dtype=torch.bool)
    passages = ["cats" * 250_000, "!?" * 500_000] + TEXTS
    pool = PassagePool(passages, source, target, trained, 16, pool_size=100, seed=0)
    limit = 2 * 16 * longest_token(source, target)
    assert all(len(text) <= limit for text in pool.passages)


def test_passages_to_keep_are_drawn_for_their_share_whatever_they_hold():
    source = load_vocab(wordpiece_tokenizer(SOURCE))
    target = load_vocab(wordpiece_tokenizer(TARGET))
    is_trained = torch.zeros(len(target), dtype=torch.bool)
    is_trained[trainable_rows(match_vocab(source, target), "new")] = True
    keep = ["the mat sat on the mat", "a mat on a mat"]  # no trained token in them
    plain = PassagePool(TEXTS, source, target, is_trained, 16, pool_size=1000, seed=0,
                        with_source=False)
    pool = PassagePool(TEXTS, source, target, is_trained, 16, pool_size=1000, seed=0,
                       with_source=False, keep_passages=keep, keep_share=0.25)
    assert pool.passages[:len(plain)] == plain.passages and pool.passages[len(plain):] == keep
    assert torch.equal(pool.weights[:len(plain)], plain.weights)
    share = float(pool.weights[len(plain):].sum() / pool.weights.sum())
    assert abs(share - 0.25) < 1e-6
    draws = torch.cat([pool.draw(4) for _ in range(2000)])
    drawn_share = float((draws >= len(plain)).float().mean())
    assert 0.15 < drawn_share < 0.35, drawn_share
    with pytest.raises(VocabxferError, match="passages to keep are read by the next-token "
                                             "objective only"):
        PassagePool(TEXTS, source, target, is_trained, 16, pool_size=1000, seed=0,
                    with_source=True, keep_passages=keep, keep_share=0.25)
