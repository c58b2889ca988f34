"""Tokenizers the size of an LLM's: a byte-level BPE of 128,256 tokens with
Llama-3-style special tokens, trained here on real text (NSMC and Python's
documentation), against a Korean target trained like it. Needs
../shared/data; about 25 s."""

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from vocabxfer import match_vocab, plan_initialisation, train_tokenizer

from vocabxfer.vocabularies import families
from vocabxfer.cli.demo import python_docs_passages

from .conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "nsmc").is_dir(),
                                reason="needs ../shared/data/nsmc")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>"] + \
    [f"<|reserved_special_token_{index}|>" for index in range(254)]


def nsmc_reviews(name="ratings_train.txt"):
    with open(SHARED_DATA / "nsmc" / name, encoding="utf-8") as handle:
        next(handle)
        return [fields[1] for fields in (line.rstrip("\n").split("\t") for line in handle)
                if len(fields) > 1 and fields[1]]


@pytest.fixture(scope="module")
def llama_style():
    """A 128,256-token byte-level BPE with Llama 3's special tokens at its
    end, <|begin_of_text|> added to every sequence."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=128_256 - len(SPECIALS), min_frequency=1,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    text = nsmc_reviews() + nsmc_reviews("ratings_test.txt") + python_docs_passages()
    tokenizer.train_from_iterator(text, trainer=trainer)
    tokenizer.add_special_tokens(SPECIALS)
    bos = tokenizer.token_to_id("<|begin_of_text|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
        special_tokens=[("<|begin_of_text|>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin_of_text|>",
                                   eos_token="<|end_of_text|>")


@pytest.fixture(scope="module")
def korean_target(llama_style, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "nsmc.txt"
    corpus.write_text("\n".join(nsmc_reviews()[:60_000]) + "\n", encoding="utf-8")
    return train_tokenizer(corpus, vocab_size=32_000, model="bpe", like=llama_style,
                           show_progress=False)


def components(tokenizer):
    document = json.loads(tokenizer.backend_tokenizer.to_str())
    return {key: document[key] for key in ("normalizer", "pre_tokenizer", "decoder")}


@pytest.mark.slow
def test_the_source_is_llm_sized(llama_style):
    assert len(llama_style) == 128_256
    assert llama_style.convert_ids_to_tokens(128_000) == "<|begin_of_text|>"


@pytest.mark.slow
def test_training_like_an_llm_tokenizer_keeps_its_pipeline(llama_style, korean_target):
    assert len(korean_target) == 32_000
    assert components(korean_target) == components(llama_style)
    # The special tokens come first, in the source's order...
    assert korean_target.convert_ids_to_tokens(list(range(256))) == SPECIALS
    # ...and the post-processor adds <|begin_of_text|> by its new id.
    ids = korean_target("영화가 좋아요")["input_ids"]
    assert ids[0] == korean_target.convert_tokens_to_ids("<|begin_of_text|>") == 0
    assert korean_target.decode(ids[1:]) == "영화가 좋아요"
    assert korean_target.bos_token == "<|begin_of_text|>"


@pytest.mark.slow
def test_canonical_match_and_fvt_split_partial_bytes(llama_style, korean_target):
    token_map = match_vocab(llama_style, korean_target, mode="canonical")
    report = token_map.report
    assert report.source_family == report.target_family == families.BYTELEVEL
    pairs = dict(zip(token_map.target_ids.tolist(), token_map.source_ids.tolist()))
    bos = korean_target.convert_tokens_to_ids("<|begin_of_text|>")
    assert pairs[bos] == llama_style.convert_tokens_to_ids("<|begin_of_text|>")
    assert report.matched > 16_000, str(report)
    # Target tokens that are not whole UTF-8 (a Hangul syllable cut inside
    # its three bytes) split into the source's byte pieces; no row falls
    # back to the mean for want of pieces.
    assert report.unmatched_by_kind.get(families.BYTE, 0) + \
        report.matched_by_kind.get(families.BYTE, 0) > 0
    plan = plan_initialisation(token_map, init="fvt")
    assert plan.counts["mean (no known pieces)"] == 0, plan.counts
    assert plan.counts["fvt"] == report.unmatched
