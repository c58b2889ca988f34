"""transfer_embeddings and its plan: every rule, checked row by row against
values computed here from the source matrix."""

import pytest
import torch

from vocabxfer import (VocabxferError, load_vocab, match_vocab, plan_initialisation,
                       transfer_embeddings)
from vocabxfer.initialisation.fvt import split_tokens, wordpiece_continuation

from .conftest import BERT_SPECIALS, unigram_tokenizer, wordpiece_tokenizer

SOURCE = BERT_SPECIALS + ["the", "cat", "##s", "run", "##ning", "##n", "##ing", "play",
                          "##ed", "dog", "ca", "##t"]
TARGET = BERT_SPECIALS + ["the", "cats", "##ning", "running", "played", "xyz", "dog", "##ted"]


@pytest.fixture
def token_map():
    return match_vocab(wordpiece_tokenizer(SOURCE), wordpiece_tokenizer(TARGET))


@pytest.fixture
def source_matrix():
    return torch.randn(len(SOURCE), 6, generator=torch.Generator().manual_seed(7))


class Initialised:
    """A plan and the matrix it fills from `source`."""

    def __init__(self, source, token_map, init, seed=0, piece_weights="uniform"):
        self.plan = plan_initialisation(token_map, init=init, piece_weights=piece_weights)
        self.weight = self.plan.apply(source, generator=torch.Generator().manual_seed(seed))


def row(matrix, vocab_tokens, token):
    return matrix[vocab_tokens.index(token)]


def pieces_by_target(segments):
    """{target id: [source ids of its pieces]} of fvt segments."""
    offsets, source_ids = segments.offsets.tolist(), segments.source_ids.tolist()
    return {t: source_ids[offsets[s]:offsets[s + 1]]
            for s, t in enumerate(segments.target_ids.tolist())}


def mean_of(matrix, tokens):
    return torch.stack([row(matrix, SOURCE, token) for token in tokens]).mean(0)


def test_the_default_weighting_is_by_piece_length(token_map, source_matrix):
    weight = transfer_embeddings(source_matrix, token_map)
    cat, s_ = row(source_matrix, SOURCE, "cat"), row(source_matrix, SOURCE, "##s")
    torch.testing.assert_close(row(weight, TARGET, "cats"), (3 * cat + s_) / 4)


def test_fvt_rows(token_map, source_matrix):
    result = Initialised(source_matrix, token_map, "fvt")
    weight = result.weight
    assert weight.shape == (len(TARGET), 6) and weight.dtype == source_matrix.dtype
    for token in BERT_SPECIALS + ["the", "##ning", "dog"]:
        assert torch.equal(row(weight, TARGET, token), row(source_matrix, SOURCE, token))
    # Word starts split as words: "cats" -> cat ##s, "running" -> run ##ning.
    torch.testing.assert_close(row(weight, TARGET, "cats"), mean_of(source_matrix, ["cat", "##s"]))
    torch.testing.assert_close(row(weight, TARGET, "running"),
                               mean_of(source_matrix, ["run", "##ning"]))
    torch.testing.assert_close(row(weight, TARGET, "played"),
                               mean_of(source_matrix, ["play", "##ed"]))
    # A continuation splits as the middle of a word: "##ted" -> ##t ##ed, not
    # the word pieces of "ted".
    torch.testing.assert_close(row(weight, TARGET, "##ted"),
                               mean_of(source_matrix, ["##t", "##ed"]))
    # No known piece: the mean source row.
    torch.testing.assert_close(row(weight, TARGET, "xyz"), source_matrix.mean(0))
    assert result.plan.counts == {"matched": 8, "special by role": 0, "fvt": 4,
                                  "mean (no known pieces)": 1, "padding rows": 0}


def test_wordpiece_continuation_is_greedy_longest_first():
    vocab = load_vocab({token: index for index, token in enumerate(SOURCE)})
    assert [vocab.tokens[i] for i in wordpiece_continuation("ning", vocab)] == ["##ning"]
    assert [vocab.tokens[i] for i in wordpiece_continuation("ted", vocab)] == ["##t", "##ed"]
    assert wordpiece_continuation("tex", vocab) == []


def test_fvt_into_a_sentencepiece_source():
    pieces = ["<unk>", "<s>", "</s>", "▁the", "▁cat", "s", "ing", "▁run", "n"]
    source = unigram_tokenizer(pieces)
    target = load_vocab({"[UNK]": 0, "[CLS]": 1, "cats": 2, "##nning": 3, "the": 4})
    token_map = match_vocab(source, target, mode="canonical")
    segments = split_tokens(token_map.source, token_map.target,
                            token_map.unmatched_target_ids.tolist())
    pieces_of = {target.tokens[t]: [pieces[i] for i in ids]
                 for t, ids in pieces_by_target(segments).items()}
    assert pieces_of == {"cats": ["▁cat", "s"], "##nning": ["n", "n", "ing"]}


@pytest.mark.parametrize("init", ["mean", "normal", "random"])
def test_other_rules(token_map, source_matrix, init):
    result = Initialised(source_matrix, token_map, init, seed=3)
    weight = result.weight
    unmatched = token_map.unmatched_target_ids
    for t, s in zip(token_map.target_ids.tolist(), token_map.source_ids.tolist()):
        assert torch.equal(weight[t], source_matrix[s])
    if init == "mean":
        for t in unmatched.tolist():
            torch.testing.assert_close(weight[t], source_matrix.mean(0))
    else:
        # Same seed, same rows; another seed, other rows.
        again = transfer_embeddings(source_matrix, token_map, init=init, seed=3)
        other = transfer_embeddings(source_matrix, token_map, init=init, seed=4)
        assert torch.equal(again, weight) and not torch.equal(other[unmatched], weight[unmatched])
    assert result.plan.counts[init] == unmatched.numel()


def test_normal_rule_follows_source_statistics():
    source = torch.randn(2000, 4) * torch.tensor([1.0, 5.0, 0.1, 2.0]) + torch.tensor(
        [3.0, -1.0, 0.0, 10.0])
    source_vocab = {f"s{i}": i for i in range(2000)}
    target_vocab = {f"t{i}": i for i in range(3000)}
    weight = transfer_embeddings(source, match_vocab(source_vocab, target_vocab), init="normal")
    torch.testing.assert_close(weight.mean(0), source.mean(0), atol=0.3, rtol=0.05)
    torch.testing.assert_close(weight.std(0), source.std(0), atol=0.1, rtol=0.1)


def test_unmatched_special_takes_the_source_role(source_matrix):
    target = load_vocab({"<unk>": 0, "<s>": 1, "</s>": 2, "the": 3})
    token_map = match_vocab(wordpiece_tokenizer(SOURCE), target)  # exact: no special matches
    result = Initialised(source_matrix, token_map, "mean")
    assert torch.equal(result.weight[0], row(source_matrix, SOURCE, "[UNK]"))
    assert torch.equal(result.weight[1], row(source_matrix, SOURCE, "[CLS]"))
    assert torch.equal(result.weight[2], row(source_matrix, SOURCE, "[SEP]"))
    assert result.plan.counts["special by role"] == 3


def test_padding_rows_dtype_device_and_embedding_input(token_map, source_matrix):
    embedding = torch.nn.Embedding.from_pretrained(source_matrix.clone(), freeze=False)
    weight = transfer_embeddings(embedding, token_map, target_size=16, init="mean",
                                 dtype=torch.bfloat16)
    assert weight.shape == (16, 6) and weight.dtype == torch.bfloat16
    assert not weight.requires_grad
    for padding_row in range(len(TARGET), 16):
        torch.testing.assert_close(weight[padding_row].float(), source_matrix.mean(0),
                                   atol=1e-2, rtol=1e-2)


def test_errors(token_map, source_matrix):
    with pytest.raises(ValueError, match="init 'zeros' is not one of fvt, mean, normal, random"):
        transfer_embeddings(source_matrix, token_map, init="zeros")
    with pytest.raises(ValueError, match="target_size 5 is smaller than the target vocabulary "
                                         r"\(13 tokens\)"):
        plan_initialisation(token_map, target_size=5)
    with pytest.raises(ValueError, match=r"the source tensor has shape \(10, 6\), but the source "
                                         "vocabulary has 17 tokens"):
        transfer_embeddings(source_matrix[:10], token_map)


def test_fvt_needs_a_tokenizer_for_a_bare_sentencepiece_vocabulary(source_matrix):
    source = load_vocab({"<unk>": 0, "▁the": 1, "s": 2}, family="sentencepiece")
    token_map = match_vocab(source, {"<unk>": 0, "▁cats": 1})
    with pytest.raises(ValueError, match="fvt: the source vocabulary .* came without its "
                                         "tokenizer"):
        transfer_embeddings(torch.randn(3, 4), token_map)


def test_source_tokenizer_with_padding_switched_on(token_map, source_matrix):
    # sentence-transformers' tokenizer.json pads every encoding to 128: the
    # padding must not enter the averages.
    padded = wordpiece_tokenizer(SOURCE)
    padded.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    padded_map = match_vocab(padded, wordpiece_tokenizer(TARGET))
    expected = transfer_embeddings(source_matrix, token_map)
    assert torch.equal(transfer_embeddings(source_matrix, padded_map), expected)


def test_fvt_into_a_byte_level_source():
    from .conftest import byte_level_text, byte_level_tokenizer

    # Byte-level BPE over the pieces of " cat", "s" and Hangul, with merges.
    merges = [("Ġ", "c"), ("Ġc", "a"), ("Ġca", "t")]
    hangul_bytes = list(byte_level_text("영화"))  # six single-byte pieces, no merges
    tokens = ["<unk>", "Ġ", "c", "a", "t", "s", "Ġc", "Ġca", "Ġcat"] + hangul_bytes
    source = byte_level_tokenizer(tokens, merges)
    target = load_vocab({"[UNK]": 0, "cats": 1, "##s": 2, "##영화": 3})
    token_map = match_vocab(source, target, mode="canonical")
    segments = split_tokens(token_map.source, token_map.target,
                            token_map.unmatched_target_ids.tolist())
    pieces_of = {target.tokens[t]: [tokens[i] for i in ids]
                 for t, ids in pieces_by_target(segments).items()}
    # A word start gets the leading space ("Ġcat"), a continuation does not.
    assert pieces_of["cats"] == ["Ġcat", "s"]
    assert pieces_of["##영화"] == hangul_bytes
    assert "##s" not in pieces_of  # matched canonically to "s"
    assert pairs_of_map(token_map) == {"##s": "s", "[UNK]": "<unk>"}


def pairs_of_map(token_map):
    target, source = token_map.target.tokens, token_map.source.tokens
    return {target[t]: source[s] for t, s in zip(token_map.target_ids.tolist(),
                                                  token_map.source_ids.tolist())}


def test_fvt_splits_partial_utf8_into_the_source_byte_pieces():
    from .conftest import byte_level_text, byte_level_tokenizer

    # 한 is three bytes (ed 95 9c); the source knows each byte and one merge.
    spelled = byte_level_text("한")
    source = byte_level_tokenizer(["<unk>", spelled[0], spelled[1], spelled[2],
                                   spelled[:2]], merges=[(spelled[0], spelled[1])])
    # Target tokens of two bytes and of one: not whole UTF-8.
    target = byte_level_tokenizer(["<unk>", spelled[1:], spelled[:1]])
    token_map = match_vocab(source, target, mode="canonical")
    segments = split_tokens(token_map.source, token_map.target,
                            token_map.unmatched_target_ids.tolist())
    source_tokens = token_map.source.tokens
    pieces = {token_map.target.tokens[t]: [source_tokens[i] for i in ids]
              for t, ids in pieces_by_target(segments).items()}
    assert pieces == {spelled[1:]: [spelled[1], spelled[2]]}
    assert segments.unsplittable == ()
    assert pairs_of_map(token_map) == {"<unk>": "<unk>", spelled[0]: spelled[0]}


@pytest.mark.parametrize("weighting,weights", [
    ("uniform", (1, 1)), ("first", (2, 1)), ("last", (1, 2)), ("length", (3, 4)),
    (lambda position, count, length: (position + 1.0) ** 2, (1, 4)),
])
def test_piece_weightings(token_map, source_matrix, weighting, weights):
    plan = plan_initialisation(token_map, init="fvt", piece_weights=weighting)
    weight = plan.apply(source_matrix)
    run, ning = row(source_matrix, SOURCE, "run"), row(source_matrix, SOURCE, "##ning")
    expected = (weights[0] * run + weights[1] * ning) / sum(weights)
    torch.testing.assert_close(row(weight, TARGET, "running"), expected)
    # A single piece is itself, whatever the weights.
    assert torch.equal(row(weight, TARGET, "##ning"), row(source_matrix, SOURCE, "##ning"))


def test_length_weighs_alike_the_pieces_of_a_token_with_a_byte_fragment():
    """"length" weighs whole pieces by their text, but a token that holds a
    byte fragment (here each byte of 한) has its pieces weighed alike."""
    from .conftest import byte_level_text, byte_level_tokenizer

    han = byte_level_text("한")
    source_tokens = ["<unk>", "a", "b", "c", "ab", han[0], han[1], han[2]]
    source = byte_level_tokenizer(source_tokens, merges=[("a", "b")])
    target_tokens = ["<unk>", "abc", "ab" + han]
    token_map = match_vocab(source, byte_level_tokenizer(target_tokens))
    matrix = torch.randn(len(source_tokens), 4, generator=torch.Generator().manual_seed(3))
    weight = plan_initialisation(token_map, init="fvt", piece_weights="length").apply(matrix)
    source_row = {token: matrix[index] for index, token in enumerate(source_tokens)}
    torch.testing.assert_close(weight[1], (2 * source_row["ab"] + source_row["c"]) / 3)
    torch.testing.assert_close(weight[2], (source_row["ab"] + source_row[han[0]]
                                           + source_row[han[1]] + source_row[han[2]]) / 4)


def test_the_output_layer_has_its_own_weighting(token_map, source_matrix):
    plan = plan_initialisation(token_map, init="fvt", piece_weights="first",
                               output_piece_weights="last")
    run, ning = row(source_matrix, SOURCE, "run"), row(source_matrix, SOURCE, "##ning")
    torch.testing.assert_close(row(plan.apply(source_matrix), TARGET, "running"),
                               (2 * run + ning) / 3)
    torch.testing.assert_close(row(plan.apply(source_matrix, output_layer=True), TARGET,
                                   "running"), (run + 2 * ning) / 3)


def test_bad_weightings(token_map):
    with pytest.raises(VocabxferError, match="piece_weights 'heavy' is not one of uniform, first, "
                                             "last, length or a callable"):
        plan_initialisation(token_map, piece_weights="heavy")
    with pytest.raises(VocabxferError, match="must return one positive, finite weight per piece"):
        plan_initialisation(token_map, piece_weights=lambda position, count, length: -position)


def test_a_lone_surrogate_token_takes_the_fallback_row():
    """"x\\ud800" is legal JSON but not text: no tokenizer can split it, so
    fvt gives it the mean row instead of a traceback."""
    from vocabxfer import match_vocab, plan_initialisation

    source = {token: index for index, token in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "##s", "x", "##y"])}
    target = {token: index for index, token in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "x\ud800", "cats", "\udcff"])}
    for mode in ("exact", "canonical"):
        plan = plan_initialisation(match_vocab(source, target, mode=mode), init="fvt")
        assert "mean (no known pieces) 2" in str(plan), str(plan)
        weight = plan.apply(torch.randn(len(source), 4, generator=torch.Generator().manual_seed(0)))
        assert torch.isfinite(weight).all() and weight.shape == (len(target), 4)
