"""objectives: the next-token loss equals transformers' own causal-LM loss
when the trained rows are the model's rows; refinement of a causal LM trains
the new input rows and, for an untied head, the new output rows and biases,
leaving every copied row bit-exact."""

import copy

import pytest
import torch

from vocabxfer import ModelError, VocabxferError, load_vocab, match_vocab, refine, transfer_model
from vocabxfer.refinement.objectives import (Mix, Trained, attention_mask, encoder_loss,
                                             is_causal_lm, next_token_loss)
from vocabxfer.refinement.passage_pool import PassagePool

from .conftest import CORPUS, byte_level_text, byte_level_tokenizer, tiny_bert, \
    wordpiece_tokenizer

LETTERS = [byte_level_text(char) for char in " abcdefghijklmnopqrstuvwxyz"]
SOURCE = ["<|endoftext|>"] + LETTERS + ["Ġt", "Ġth", "Ġthe"]
SOURCE_MERGES = [("Ġ", "t"), ("Ġt", "h"), ("Ġth", "e")]
TARGET = SOURCE + ["Ġc", "Ġca", "Ġcat", "Ġd", "Ġdo", "Ġdog"]
TARGET_MERGES = SOURCE_MERGES + [("Ġ", "c"), ("Ġc", "a"), ("Ġca", "t"), ("Ġ", "d"),
                                 ("Ġd", "o"), ("Ġdo", "g")]
TEXTS = [line for line in CORPUS if line.isascii()]


def tokenizers():
    return (byte_level_tokenizer(SOURCE, SOURCE_MERGES),
            byte_level_tokenizer(TARGET, TARGET_MERGES))


def causal_lm(vocab_size, tied, bias=False, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=40,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         tie_word_embeddings=tied)
    model = LlamaForCausalLM(config)
    if bias:
        model.lm_head = torch.nn.Linear(32, vocab_size, bias=True)
        torch.nn.init.normal_(model.lm_head.bias)
    return model.eval()


def test_next_token_loss_is_the_models_own_loss():
    _, target = tokenizers()
    vocab = load_vocab(target)
    model = causal_lm(len(TARGET), tied=False, bias=True)
    is_trained = torch.zeros(len(TARGET), dtype=torch.bool)
    is_trained[-6:] = True
    pool = PassagePool(TEXTS, vocab, vocab, is_trained, 24, pool_size=100, seed=0,
                       with_source=False)
    batch = pool.batch(pool.draw(6))
    ids = torch.arange(len(TARGET) - 6, len(TARGET))
    weight = model.get_input_embeddings().weight
    slot = torch.full((len(TARGET),), -1)
    slot[ids] = torch.arange(6)
    trained = Trained(rows=weight.detach()[ids].clone(), slot=slot, ids=ids,
                      output_rows=model.lm_head.weight.detach()[ids].clone(),
                      output_bias=model.lm_head.bias.detach()[ids].clone())
    with torch.no_grad():
        total, count = next_token_loss(batch, model.model, weight.detach(), trained,
                                       model.lm_head, tied=False)
        ours = total / count
        labels = batch.target_ids.masked_fill(batch.target_mask == 0, -100)
        theirs = model(input_ids=batch.target_ids, attention_mask=batch.target_mask,
                       labels=labels).loss
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), (ours, theirs)


def trained_rows_of(model, ids, untied):
    weight = model.get_input_embeddings().weight
    slot = torch.full((weight.shape[0],), -1)
    slot[ids] = torch.arange(len(ids))
    head = model.get_output_embeddings()
    return Trained(rows=weight.detach()[ids].clone(), slot=slot, ids=ids,
                   output_rows=head.weight.detach()[ids].clone() if untied else None)


@pytest.mark.parametrize("objective", ["words", "next-token"])
def test_fixed_shape_batches_give_the_loss_of_batches_cut_to_length(objective):
    """An accelerator's batches are padded to max_length, with a 4-D mask
    under SDPA (no host synchronisation): the loss must not change."""
    source, target = tokenizers()
    vocab, source_vocab = load_vocab(target), load_vocab(source)
    is_trained = torch.zeros(len(TARGET), dtype=torch.bool)
    is_trained[-6:] = True
    ids = torch.arange(len(TARGET) - 6, len(TARGET))

    def loss(fixed_shape):
        pool = PassagePool(TEXTS, source_vocab, vocab, is_trained, 24, pool_size=100, seed=0,
                           with_source=objective == "words", align="spans+specials")
        pool.to("cpu", fixed_shape=fixed_shape)
        batch = pool.batch(pool.draw(6))
        if objective == "words":
            model = tiny_bert(len(TARGET), seed=1)
            assert model.config._attn_implementation == "sdpa"
            table = model.get_input_embeddings().weight.detach()
            teacher = torch.randn(len(SOURCE), table.shape[1], generator=torch.Generator()
                                  .manual_seed(2))
            return encoder_loss(batch, model.bert, table, trained_rows_of(model, ids, False),
                                teacher, (-1, 1), Mix()), batch
        model = causal_lm(len(TARGET), tied=False)
        assert model.config._attn_implementation == "sdpa"
        return next_token_loss(batch, model.model, model.get_input_embeddings().weight.detach(),
                               trained_rows_of(model, ids, True), model.lm_head,
                               tied=False), batch

    with torch.no_grad():
        (fixed_total, fixed_count), fixed = loss(True)
        (cut_total, cut_count), cut = loss(False)
    assert fixed.target_ids.shape[1] == 24 > cut.target_ids.shape[1]
    assert fixed_count == cut_count > 0
    assert torch.allclose(fixed_total, cut_total, rtol=1e-5, atol=1e-6), (fixed_total, cut_total)


def test_four_d_masks_only_where_sdpa_takes_them():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    bert = tiny_bert(10).bert
    full = attention_mask(bert, mask, fixed_shape=True)
    assert full.shape == (2, 1, 3, 3) and full.dtype == torch.bool
    assert full[0, 0].tolist() == [[True, True, False]] * 3
    causal = attention_mask(bert, mask, fixed_shape=True, causal=True)
    assert causal[1, 0].tolist() == [[True, False, False], [True, True, False], [True] * 3]
    assert causal[0, 0, 2].tolist() == [True, True, False]
    assert attention_mask(bert, mask, fixed_shape=False) is mask  # batches cut on a CPU
    bert.config._attn_implementation = "eager"  # adds masks as floats: keeps the 2-D one
    assert attention_mask(bert, mask, fixed_shape=True) is mask


def test_a_causal_lm_is_recognised():
    assert is_causal_lm(causal_lm(len(TARGET), tied=True))
    assert not is_causal_lm(tiny_bert(10))


@pytest.mark.parametrize("tied,bias", [(True, False), (False, False), (False, True)],
                         ids=["tied", "untied", "untied with bias"])
def test_refining_a_causal_lm_trains_its_new_rows_only(tied, bias):
    source, target = tokenizers()
    teacher = causal_lm(len(SOURCE), tied=tied, bias=bias)
    student = copy.deepcopy(teacher)
    transfer_model(student, source, target)
    new = torch.arange(len(SOURCE), len(TARGET))
    copied = torch.arange(len(SOURCE))
    before = copy.deepcopy(student.state_dict())
    result = refine(student, teacher, match_vocab(source, target), TEXTS, steps=30, lr=1e-2,
                    batch_size=8,
                    show_progress=False)
    assert result.objective == "next-token" and "next-token loss" in str(result)
    assert sum(result.losses[-5:]) < sum(result.losses[:5])
    after = student.state_dict()
    embedding, head = "model.embed_tokens.weight", "lm_head.weight"
    assert not torch.equal(after[embedding][new], before[embedding][new])
    assert torch.equal(after[embedding][copied], before[embedding][copied])
    if tied:
        assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()
    else:
        assert not torch.equal(after[head][new], before[head][new])
        assert torch.equal(after[head][copied], before[head][copied])
    if bias:
        assert not torch.equal(after["lm_head.bias"][new], before["lm_head.bias"][new])
        assert torch.equal(after["lm_head.bias"][copied], before["lm_head.bias"][copied])
    for name, tensor in after.items():
        if name not in (embedding, head, "lm_head.bias"):
            assert torch.equal(tensor, before[name]), name


def test_objective_choices_are_checked():
    source, target = tokenizers()
    teacher = causal_lm(len(SOURCE), tied=True)
    student = copy.deepcopy(teacher)
    transfer_model(student, source, target)
    with pytest.raises(VocabxferError, match="refine: objective 'bits' is not one of auto, "
                                             "words, contrastive, similarity, "
                                             "words\\+contrastive, words\\+similarity, "
                                             "halves, words\\+halves, next-token"):
        refine(student, teacher, match_vocab(source, target), TEXTS, objective="bits",
               show_progress=False)
    bert_teacher = tiny_bert(5 + 3)
    bert_student = copy.deepcopy(bert_teacher)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    bert_source = wordpiece_tokenizer(specials + ["the", "cat", "dog"])
    bert_target = wordpiece_tokenizer(specials + ["the", "cats", "dogs"])
    transfer_model(bert_student, bert_source, bert_target)
    with pytest.raises(ModelError, match="the next-token objective needs a causal language "
                                         "model"):
        refine(bert_student, bert_teacher, match_vocab(bert_source, bert_target), TEXTS,
               objective="next-token", show_progress=False)
    # The word objective still works for a causal LM, when asked for.
    result = refine(student, teacher, match_vocab(source, target), TEXTS, objective="words",
                    steps=3,
                    batch_size=8, show_progress=False)
    assert result.objective == "words" and result.steps == 3


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_bfloat16_model_refines_in_its_dtype(precision):
    """The trained rows are float32 copies; the model stays bfloat16, read
    and written back in its own dtype."""
    source, target = tokenizers()
    teacher = causal_lm(len(SOURCE), tied=False, bias=True).to(torch.bfloat16)
    student = copy.deepcopy(teacher)
    transfer_model(student, source, target)
    before = student.lm_head.weight.detach().clone()
    result = refine(student, teacher, match_vocab(source, target), TEXTS, steps=3, batch_size=8,
                    precision=precision, show_progress=False)
    assert result.steps == 3
    assert student.lm_head.weight.dtype == student.model.embed_tokens.weight.dtype == \
        torch.bfloat16
    assert not torch.equal(student.lm_head.weight, before)
