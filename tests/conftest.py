"""Shared fixtures: devices, and tiny tokenizers and models built locally with
a fixed seed (no network, no model hub)."""

import os

# Tests never reach the network: a hub look-up must fail at once, offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FLOAT_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def pytest_addoption(parser):
    parser.addoption("--fuzz", type=int, default=None, metavar="N",
                     help="cases per property test (default: 1,000 each, 2,000 in all)")


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device")
    config.addinivalue_line("markers", "slow: starts several processes or runs for long "
                                       "(make test runs it; make test-fast leaves it out)")
    from hypothesis import HealthCheck, settings

    fuzz = config.getoption("--fuzz")
    # A plain run draws the same 1,000 cases per property every time, so CI
    # is repeatable; --fuzz N draws N fresh ones.
    settings.register_profile(
        "vocabxfer", max_examples=fuzz or 1000, derandomize=fuzz is None, deadline=None,
        database=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("vocabxfer")


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def error_paths_survive():
    """Raises the ops' errors once in a child interpreter before any test
    raises them here: if that crashes (a second C++ runtime in the process
    does), the error tests fail naming the cause instead of the whole run
    dying with a segfault."""
    from vocabxfer.ops.doctor import PASS, check_error_paths

    verdict = check_error_paths()
    if verdict.status != PASS:
        pytest.fail(f"not raising errors in this process: {verdict.detail}", pytrace=False)


# ---- tiny tokenizers of every family, built locally --------------------------

from pathlib import Path  # noqa: E402

from tokenizers import (Tokenizer, decoders, models, normalizers, pre_tokenizers, processors)  # noqa: E402


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_tokenizer(tokens, lowercase=False):
    """A BERT-style WordPiece tokenizer whose vocabulary is exactly `tokens`
    (specials first)."""
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens([token for token in tokens if token in BERT_SPECIALS])
    tokenizer.post_processor = processors.BertProcessing(
        ("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    return tokenizer


def unigram_tokenizer(pieces):
    """A SentencePiece-style Unigram tokenizer (Metaspace, byte fallback)
    whose pieces are exactly `pieces`, in id order, `<unk>` at 0... as given."""
    scores = [(piece, -float(index)) for index, piece in enumerate(pieces)]
    tokenizer = Tokenizer(models.Unigram(scores, unk_id=pieces.index("<unk>"), byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.add_special_tokens([piece for piece in pieces
                                  if piece in ("<s>", "</s>", "<pad>", "<unk>", "<mask>")])
    return tokenizer


def byte_level_text(text):
    """How byte-level BPE spells `text`: each UTF-8 byte as GPT-2's character,
    by tokenizers' own ByteLevel pre-tokenizer (an oracle independent of
    vocabxfer's byte table)."""
    spelled = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False) \
        .pre_tokenize_str(text)
    return "".join(piece for piece, _ in spelled)


def byte_level_tokenizer(tokens, merges=()):
    """A GPT-2-style byte-level BPE tokenizer over exactly `tokens`."""
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([t for t in tokens if t.startswith("<") and t.endswith(">")
                                  and len(t) > 2 and not t.startswith("<0x")])
    return tokenizer


CORPUS = [
    "the cat sat on the mat", "the dog sat on the log", "a cat and a dog",
    "running and jumping and sitting", "the mat was red", "dogs and cats are running",
    "한국 영화 정말 재미있어요", "영화가 너무 재미없어요", "배우 연기가 좋아요",
    "정말 좋은 영화", "재미있는 영화 추천", "이 영화 최고",
] * 20


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    return path


def tiny_bert(vocab_size, tied=True, seed=0):
    """A one-layer BERT masked LM with random weights and a fixed seed."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
                        tie_word_embeddings=tied, pad_token_id=0)
    model = BertForMaskedLM(config)
    with torch.no_grad():
        # Make the bias informative: a fresh model's is all zeros.
        model.cls.predictions.bias.normal_()
    return model.eval()


def save_bert_folder(folder, tokens, tied=True):
    """A model folder as from save_pretrained: tiny BERT + its WordPiece
    tokenizer over exactly `tokens`."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    model = tiny_bert(len(tokens), tied=tied)
    model.save_pretrained(str(folder), safe_serialization=True)
    return model, tokenizer


# For crash tests' child programs: swaps without RENAME_EXCHANGE, and the
# process kills itself right after the first of a swap's two renames (the
# old folder moved aside, the new one not yet in place).
KILL_BETWEEN_RENAMES = """
import os, signal
from vocabxfer.checkpoints import atomic
atomic.exchange = lambda first, second: False
_rename = os.rename
def _rename_then_die(source, target):
    _rename(source, target)
    if ".old-" in str(target):
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = _rename_then_die
"""
