"""An experiment on validation passages, not a feature: does training part
of the transformer body, besides the new embedding rows, lift refine's
word-vector fidelity past the plateau (quality_tuning.md, round 5)?

The real all-MiniLM-L6-v2 moved to an 8,000-token WordPiece trained on the
corpus's training passages (eval_quality's split), fvt, then refine for
STEPS steps; the body parameters named by each variant train too, with
their own Adam at their own rate (following refine's linear decay), while
the teacher reads a frozen copy of the body. refine's internals are
patched from here for the run (word_loss's teacher pass, the optimizer,
the parameters' requires_grad), which is why this is a script and not an
option. Prints the validation cosine (sentence embeddings of the 300
validation passages against the source model's) per variant.

    python benchmarks/tune_body.py STEPS CORPUS '[["label", "which", lr], ...]'

which: null (refine as it is), "norms+biases", "norms", "attention", "all".
"""

import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import corpora  # noqa: E402
import eval_quality as eq  # noqa: E402

import vocabxfer  # noqa: E402
from vocabxfer.cli import demo
from vocabxfer.models.loading import load_model  # noqa: E402

R = sys.modules["vocabxfer.refinement.loop"]  # the module (vocabxfer.refine is the function)
O = sys.modules["vocabxfer.refinement.objectives"]
ORIGINAL = (O.word_loss, R.make_optimizer, R.StepLosses)


class Proxy:
    """The student's body, except under no_grad (word_loss's teacher pass),
    where the frozen copy answers."""

    def __init__(self, student, teacher):
        self._student, self._teacher = student, teacher

    def __call__(self, *args, **kwargs):
        return (self._student if torch.is_grad_enabled() else self._teacher)(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._student, name)


class Both:
    """The rows' optimizer as refine sees it (refine sets its rate each
    step); the body's Adam follows the same schedule, scaled to body_lr."""

    def __init__(self, rows, body, lr, body_lr):
        self.rows, self.body, self.lr, self.body_lr = rows, body, lr, body_lr
        self.param_groups = rows.param_groups

    def zero_grad(self, set_to_none=True):
        self.rows.zero_grad(set_to_none=set_to_none)
        self.body.zero_grad(set_to_none=set_to_none)

    def step(self):
        share = self.rows.param_groups[0]["lr"] / self.lr
        self.body.param_groups[0]["lr"] = self.body_lr * share
        self.rows.step()
        self.body.step()


def body_params(body, which):
    names = {"norms+biases": lambda n: "LayerNorm" in n or n.endswith(".bias"),
             "norms": lambda n: "LayerNorm" in n,
             "attention": lambda n: ".attention." in n,
             "all": lambda n: True}[which]
    return [p for n, p in body.named_parameters() if "embeddings" not in n and names(n)]


def patch(model, which, body_lr):
    """refine, for one run, trains `which` of the body too."""
    body = R.body_of(model)
    teacher_body = copy.deepcopy(body).eval().requires_grad_(False)
    extra = body_params(body, which)
    word_loss, make_optimizer, step_losses = ORIGINAL

    def patched_loss(batch, student_body, *args):
        return word_loss(batch, Proxy(student_body, teacher_body), *args)

    def patched_optimizer(name, objective, trained, lr):
        return Both(make_optimizer(name, objective, trained, lr),
                    torch.optim.Adam(extra, lr=body_lr), lr, body_lr)

    class PatchedLosses(step_losses):
        # Made after refine froze every parameter: the body's turn on here.
        def __init__(self, *args, **kwargs):
            for parameter in extra:
                parameter.requires_grad_(True)
            super().__init__(*args, **kwargs)

    O.word_loss, R.make_optimizer, R.StepLosses = patched_loss, patched_optimizer, PatchedLosses
    return sum(p.numel() for p in extra)


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    corpus_name = sys.argv[2] if len(sys.argv) > 2 else "python-docs"
    variants = json.loads(sys.argv[3]) if len(sys.argv) > 3 else [["defaults", None, 0]]
    model_dir = str(demo.minilm_folder())
    teacher = load_model(model_dir).eval()
    import transformers as tf
    source_tokenizer = tf.AutoTokenizer.from_pretrained(model_dir)
    corpus = eq.Corpus(corpus_name, corpora.CORPORA[corpus_name](), model_dir, teacher,
                       source_tokenizer, 8000, 0, eq.HELD_OUT)
    for label, which, body_lr in variants:
        model = copy.deepcopy(teacher)
        transferred = vocabxfer.transfer_model(model, model_dir, corpus.target, seed=0, init="fvt")
        trained = patch(model, which, body_lr) if which else 0
        started = time.perf_counter()
        try:
            result = vocabxfer.refine(model, teacher, transferred,
                                      corpus.training, seed=0, show_progress=False,
                                      steps=steps)
        finally:
            O.word_loss, R.make_optimizer, R.StepLosses = ORIGINAL
        model.requires_grad_(False)
        validation, _ = eq.fidelity(corpus.validation_reference,
                                    eq.embed(model, corpus.target, corpus.validation))
        print(f"RESULT {corpus_name} {label:<24} body parameters {trained:>10,}  steps "
              f"{result.steps}  validation cos {float(validation.mean()):.4f}  "
              f"{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
