"""transfer_model on tiny models built here."""


import pytest
import torch
from transformers import AutoModelForMaskedLM

from vocabxfer import ModelError, load_vocab, transfer_model

from .conftest import BERT_SPECIALS, save_bert_folder, tiny_bert, wordpiece_tokenizer

SOURCE = BERT_SPECIALS + ["the", "cat", "##s", "sat", "on", "mat", "dog", "##ing", "run"]
TARGET = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]", "mat", "the", "cats", "running", "dog",
          "zzz"]


def source_state(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("tied", [True, False])
def test_every_vocab_sized_tensor_is_refilled(tied):
    model = tiny_bert(len(SOURCE), tied=tied)
    before = source_state(model)
    result = transfer_model(model, wordpiece_tokenizer(SOURCE), wordpiece_tokenizer(TARGET),
                            piece_weights="uniform")
    size = len(TARGET)
    embeddings = model.get_input_embeddings()
    decoder = model.get_output_embeddings()
    assert embeddings.weight.shape == (size, 32) and embeddings.num_embeddings == size
    assert decoder.weight.shape == (size, 32) and decoder.out_features == size
    assert model.cls.predictions.bias.shape == (size,)
    assert (decoder.weight is embeddings.weight) == tied
    assert model.config.vocab_size == size and model.config.pad_token_id == 1
    assert embeddings.padding_idx == 1
    source_rows = {token: index for index, token in enumerate(SOURCE)}
    for target_id, token in enumerate(TARGET):
        if token in source_rows:
            s = source_rows[token]
            assert torch.equal(embeddings.weight[target_id],
                               before["bert.embeddings.word_embeddings.weight"][s])
            assert torch.equal(model.cls.predictions.bias[target_id],
                               before["cls.predictions.bias"][s])
            if not tied:
                assert torch.equal(decoder.weight[target_id],
                                   before["cls.predictions.decoder.weight"][s])
    # fvt: "cats" averages cat + ##s in every refilled tensor, the bias too.
    cat, s_ = source_rows["cat"], source_rows["##s"]
    torch.testing.assert_close(model.cls.predictions.bias[7],
                               (before["cls.predictions.bias"][cat] +
                                before["cls.predictions.bias"][s_]) / 2)
    if not tied:
        torch.testing.assert_close(decoder.weight[7],
                                   (before["cls.predictions.decoder.weight"][cat] +
                                    before["cls.predictions.decoder.weight"][s_]) / 2)
    # Nothing else changed.
    for name, tensor in model.state_dict().items():
        if "word_embeddings" not in name and "predictions.bias" not in name and \
                "decoder" not in name:
            assert torch.equal(tensor, before[name]), name
    assert "bert.embeddings.word_embeddings.weight" in result.tensors
    # The model runs on the new ids, and still trains.
    logits = model(input_ids=torch.tensor([[2, 6, 7, 3]])).logits
    assert logits.shape == (1, 4, size)
    logits.sum().backward()
    assert embeddings.weight.grad is not None


def test_model_without_embeddings():
    with pytest.raises(ModelError, match=r"the model \(Linear\) has no input embeddings"):
        transfer_model(torch.nn.Linear(2, 2), {"a": 0}, {"a": 0})


def test_tokenizer_larger_than_the_embeddings():
    model = tiny_bert(5)
    with pytest.raises(ModelError, match=r"has 14 tokens but the model's input embeddings have 5 "
                                         r"rows; is it this model's tokenizer\?"):
        transfer_model(model, wordpiece_tokenizer(SOURCE), wordpiece_tokenizer(TARGET))


def test_source_from_a_saved_folder_and_padding(tmp_path):
    save_bert_folder(tmp_path / "source", SOURCE)
    model = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "source"))
    result = transfer_model(model, tmp_path / "source", wordpiece_tokenizer(TARGET),
                            init="mean", pad_to_multiple_of=8)
    assert model.get_input_embeddings().weight.shape[0] == 16
    assert result.plan.counts["padding rows"] == 5
    assert load_vocab(tmp_path / "source").lowercase is True


def test_untied_output_layer_takes_the_output_weighting():
    model = tiny_bert(len(SOURCE), tied=False)
    before = source_state(model)
    transfer_model(model, wordpiece_tokenizer(SOURCE), wordpiece_tokenizer(TARGET),
                   piece_weights="first", output_piece_weights="last")
    cat, s_ = SOURCE.index("cat"), SOURCE.index("##s")
    cats = TARGET.index("cats")
    embedding = before["bert.embeddings.word_embeddings.weight"]
    decoder = before["cls.predictions.decoder.weight"]
    torch.testing.assert_close(model.get_input_embeddings().weight[cats],
                               (2 * embedding[cat] + embedding[s_]) / 3)
    torch.testing.assert_close(model.get_output_embeddings().weight[cats],
                               (decoder[cat] + 2 * decoder[s_]) / 3)
    bias = before["cls.predictions.bias"]
    torch.testing.assert_close(model.cls.predictions.bias[cats], (bias[cat] + 2 * bias[s_]) / 3)
