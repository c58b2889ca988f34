"""Which piece weighting an untied output layer wants, measured on a
masked-LM head.

No real masked LM with an untied head installs offline, so one is made from
the real all-MiniLM-L6-v2 body: its MLM head (transform, decoder untied from
the embeddings, bias) is trained on the source vocabulary, with the body
frozen, on the training passages of Python's documentation. The model is
then moved to an 8,000-token WordPiece trained on the same passages, with
the input embeddings' weighting fixed and each weighting for the output
layer and its bias; masked-token prediction is measured under the target
tokenizer (accuracy and negative log-likelihood at 15% masked positions).
The weighting with the best likelihood on validation passages is proposed;
every figure reported comes from held-out passages.

Writes results/output_layer.md and output_layer.json.
"""

import copy
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import corpora  # noqa: E402
from eval_quality import HELD_OUT, WEIGHTINGS, split, train_target  # noqa: E402

import vocabxfer  # noqa: E402
from vocabxfer.cli import demo

MASK_SHARE = 0.15
MAX_LENGTH = 64


def masked_batch(tokenizer, texts, generator):
    """Token ids with 15% of the ordinary tokens replaced by [MASK], and the
    labels (-100 where nothing is masked)."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH,
                      return_tensors="pt", return_special_tokens_mask=True)
    ids = batch["input_ids"]
    candidates = (batch["special_tokens_mask"] == 0) & (batch["attention_mask"] == 1)
    chosen = candidates & (torch.rand(ids.shape, generator=generator) < MASK_SHARE)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    masked = torch.where(chosen, torch.full_like(ids, tokenizer.mask_token_id), ids)
    return masked, batch["attention_mask"], labels


def masked_lm(model_dir):
    """BertForMaskedLM with the MiniLM body and an untied, untrained head
    whose decoder starts as the input embeddings."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig.from_pretrained(str(model_dir), tie_word_embeddings=False)
    model = BertForMaskedLM(config)
    body = vocabxfer.load_model(model_dir)
    model.bert.load_state_dict(body.state_dict(), strict=False)
    with torch.no_grad():
        model.cls.predictions.decoder.weight.copy_(body.get_input_embeddings().weight)
        model.cls.predictions.bias.zero_()
    return model


def train_head(model, tokenizer, passages, steps, seed):
    """The head learns to predict masked source tokens; the body is frozen."""
    generator = torch.Generator().manual_seed(seed)
    order = random.Random(seed)
    for parameter in model.bert.parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.Adam(model.cls.parameters(), lr=1e-3)
    model.eval()
    losses = []
    for _ in range(steps):
        ids, mask, labels = masked_batch(tokenizer, order.sample(passages, 32), generator)
        with torch.no_grad():
            hidden = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        picked = labels != -100
        logits = model.cls(hidden[picked])
        loss = F.cross_entropy(logits, labels[picked])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def masked_prediction(model, tokenizer, passages, seed):
    """(accuracy, mean negative log-likelihood) at masked positions."""
    generator = torch.Generator().manual_seed(seed)
    correct = total = 0
    nll = 0.0
    model.eval()
    for start in range(0, len(passages), 64):
        ids, mask, labels = masked_batch(tokenizer, passages[start:start + 64], generator)
        logits = model(input_ids=ids, attention_mask=mask).logits
        picked = labels != -100
        chosen = logits[picked]
        correct += int((chosen.argmax(-1) == labels[picked]).sum())
        nll += float(F.cross_entropy(chosen, labels[picked], reduction="sum"))
        total += int(picked.sum())
    return correct / total, nll / total


def main(argv=None):
    parser = common.argument_parser(__doc__, data=False)
    parser.add_argument("--head-steps", type=int, default=400, help="head training steps (400)")
    parser.add_argument("--input-weights", default="length", choices=WEIGHTINGS,
                        help="weighting of the input embeddings (length)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="40 head steps, 200 passages")
    args = parser.parse_args(argv)
    try:
        model_dir = demo.minilm_folder()
    except vocabxfer.ModelError as error:
        raise SystemExit(f"skipped: {error}")
    from transformers import AutoTokenizer

    held_out, validation, training = split(corpora.python_docs_passages(), args.seed,
                                           200 if args.quick else HELD_OUT)
    target = train_target(training, model_dir, 8000)
    source_tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    started = time.perf_counter()
    model = masked_lm(model_dir)
    losses = train_head(model, source_tokenizer, training, 40 if args.quick else args.head_steps,
                        args.seed)
    head_seconds = time.perf_counter() - started
    source_accuracy, source_nll = masked_prediction(model, source_tokenizer, held_out, args.seed)
    print(f"head trained in {head_seconds:.0f} s (loss {losses[0]:.2f} -> "
          f"{sum(losses[-20:]) / len(losses[-20:]):.2f}); source vocabulary: accuracy "
          f"{source_accuracy:.3f}, NLL {source_nll:.3f}", flush=True)

    rows = []
    for weighting in WEIGHTINGS:
        moved = copy.deepcopy(model)
        vocabxfer.transfer_model(moved, model_dir, target, piece_weights=args.input_weights,
                                 output_piece_weights=weighting)
        validation_accuracy, validation_nll = masked_prediction(moved, target, validation,
                                                                args.seed)
        accuracy, nll = masked_prediction(moved, target, held_out, args.seed)
        rows.append({"output_weights": weighting, "validation_nll": validation_nll,
                     "validation_accuracy": validation_accuracy, "accuracy": accuracy,
                     "nll": nll})
        print(f"  output layer {weighting:<8} held-out accuracy {accuracy:.3f}  NLL {nll:.3f}  "
              f"(validation NLL {validation_nll:.3f})", flush=True)
    best = min(rows, key=lambda row: row["validation_nll"])["output_weights"]
    body = (f"MiniLM body (frozen) with an untied MLM head trained for {len(losses)} steps on "
            f"the source vocabulary ({head_seconds:.0f} s; held-out masked accuracy "
            f"{source_accuracy:.3f}, NLL {source_nll:.3f} before the transfer). Moved to an "
            f"8,000-token WordPiece; input embeddings weighted '{args.input_weights}'; masked "
            f"tokens under the target tokenizer, {len(held_out):,} held-out passages. Best on "
            f"validation: **{best}**.\n\n"
            + common.markdown_table(
                ["output layer weighting", "held-out accuracy", "held-out NLL",
                 "validation NLL"],
                [[row["output_weights"], f"{row['accuracy']:.3f}", f"{row['nll']:.3f}",
                  f"{row['validation_nll']:.3f}"] for row in rows]))
    out_dir = args.out or common.RESULTS
    path = common.write_result("output_layer.md", "Piece weighting for an untied output layer",
                               body, out_dir=out_dir)
    common.write_json("output_layer.json", {"best": best, "rows": rows,
                                            "source_accuracy": source_accuracy,
                                            "source_nll": source_nll}, out_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
