"""TranslationTask, BLEU, the GNMT learning-rate schedules and recipes, and the family checks.

The task is tested against small stand-in models with the contract's interface (forward for
teacher forcing; encode / decode_step for prune_cli.decode), so that every number is known.
"""
import math
from typing import NamedTuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from prune_cli.config import ConfigError
from prune_cli.checks import check_family, check_family_choices, datasets_for
from prune_cli.train.engine.bleu import corpus_bleu
from prune_cli.train.engine.optim import learning_rate
from prune_cli.train.plan.recipe import recipe
from prune_cli.train.engine.tasks import TranslationTask, build_task

PAD, BOS, EOS = 0, 1, 2
WORDS = {i: f"w{i}" for i in range(4, 30)}


def detok(ids):
    return " ".join(WORDS.get(i, "<unk>") for i in ids)


META = {"vocab_size": 30, "pad_id": PAD, "bos_id": BOS, "eos_id": EOS, "dataset": "multi30k", "direction": "de-en",
        "synthetic": False, "detokenize": detok, "bleu_tokenize": "13a", "max_decode_len": 12}


def cfg(beam_size=3, eval_beam_size=1, ratio=2.0, extra=1):
    return OmegaConf.create({
        "model": {"name": "gnmt", "task": "translation", "beam_size": beam_size, "length_penalty": 1.0,
                  "max_decode_ratio": ratio, "max_decode_extra": extra},
        "trainer": {"eval_beam_size": eval_beam_size},
    })


class Enc(NamedTuple):
    src: torch.Tensor
    src_len: torch.Tensor


class Copier(nn.Module):
    """Translates by copying the source, then eos: the contract's interface, known answers.

    forward (teacher forcing) returns logits that put ``margin`` on the copied token at each
    target position; the loss of a target is then exactly known.
    """

    def __init__(self, vocab=30, margin=2.0):
        super().__init__()
        self.vocab, self.margin, self.pad_id = vocab, margin, PAD
        self.dummy = nn.Parameter(torch.zeros(1))

    def _logits(self, src, src_len, pos):
        rows = torch.arange(src.size(0))
        tok = torch.where(pos < src_len, src[rows, pos.clamp(max=src.size(1) - 1)], torch.full_like(pos, EOS))
        return F.one_hot(tok, self.vocab).float() * self.margin + self.dummy

    def forward(self, src, src_len, tgt_in):
        steps = [self._logits(src, src_len, torch.full((src.size(0),), t)) for t in range(tgt_in.size(1))]
        return torch.stack(steps, dim=1)

    def encode(self, src, src_len):  # the state is float, as an LSTM's: the position as a number
        return Enc(src, src_len), (torch.zeros(src.size(0)),)

    def decode_step(self, tokens, state, enc):
        (pos,) = state
        return self._logits(enc.src, enc.src_len, pos.long()), (pos + 1,)


def pad(seqs):
    out = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s)
    return out


def pair_batch(srcs, tgts, refs=None):
    src, src_len = pad(srcs), torch.tensor([len(s) for s in srcs])
    tgt_in, tgt_out = pad([[BOS] + t for t in tgts]), pad([t + [EOS] for t in tgts])
    batch = (src, src_len, tgt_in, tgt_out)
    return batch if refs is None else batch + (refs,)


SRCS = [[4, 5, 6, 7], [8, 9], [10, 11, 12]]


def test_loss_is_the_token_sum_over_sentences_pad_ignored():
    task = TranslationTask(cfg(), torch.device("cpu"), META)
    model = Copier()
    tgts = [[4, 5, 6, 7], [8, 9], [10, 11, 13]]  # the last target differs from the copy once
    batch = pair_batch(SRCS, tgts)
    loss = task.loss(model, batch)
    # Per target token: copied token right -> -log softmax(margin at it); wrong -> margin below.
    right = -math.log(math.exp(2.0) / (math.exp(2.0) + 29))
    wrong = -math.log(1.0 / (math.exp(2.0) + 29))
    tokens = sum(len(t) + 1 for t in tgts)  # + eos each
    want = ((tokens - 1) * right + wrong) / 3
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert task.batches == 1 and float(task.tokens_per_sentence) == pytest.approx(tokens / 3)
    # Per-token train metrics divide by the mean target length of the same batches.
    m = task.train_metrics(loss.item())
    assert m["loss"] == pytest.approx(want * 3 / tokens, rel=1e-6)
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"]), rel=1e-9)
    assert task.batches == 0 and task.tokens_per_sentence is None  # the next row starts afresh


def test_train_metrics_exact_over_many_equal_batches_and_resume():
    task = TranslationTask(cfg(), torch.device("cpu"), META)
    model = Copier()
    batches = [pair_batch(SRCS, [s[:k] for s in SRCS]) for k in (1, 2, 4)]
    losses = [task.loss(model, b).item() for b in batches[:2]]
    saved = task.state_dict()
    resumed = TranslationTask(cfg(), torch.device("cpu"), META)
    resumed.load_state_dict(saved)
    losses.append(resumed.loss(model, batches[2]).item())
    assert resumed.batches == 3
    # 3 sentences a batch: the per-token loss is the token-weighted mean, exactly.
    nll = sum(loss * 3 for loss in losses)
    tokens = sum(int((b[3] != PAD).sum()) for b in batches)
    assert resumed.train_metrics(sum(losses) / 3)["loss"] == pytest.approx(nll / tokens, rel=1e-6)


def test_evaluate_decodes_every_sentence_and_scores_bleu():
    task = TranslationTask(cfg(beam_size=3, eval_beam_size=1), torch.device("cpu"), META)
    model = Copier()
    refs = [detok(s) for s in SRCS]
    splits = [pair_batch(SRCS[:2], SRCS[:2], refs[:2]), pair_batch(SRCS[2:], SRCS[2:], refs[2:])]
    for final in (False, True):
        m = task.evaluate(model.eval(), iter(splits), final=final)
        assert m["bleu"] == pytest.approx(100.0)
        assert m["sentences"] == 3.0 and m["tokens"] == float(sum(len(s) + 1 for s in SRCS))
        assert all(type(v) is float for v in m.values())  # metrics.csv takes floats
        right = -math.log(math.exp(2.0) / (math.exp(2.0) + 29))
        assert m["loss"] == pytest.approx(right, rel=1e-6) and m["perplexity"] == pytest.approx(math.exp(right))
    assert task.bleu_signature == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" + \
        __import__("sacrebleu").__version__
    # Against other references the score is sacrebleu's own.
    other = ["w4 w5 w6 w9", "w8 w9", "w10 w12 w11"]
    got = task.evaluate(model.eval(), iter([pair_batch(SRCS, SRCS, other)]), final=True)["bleu"]
    assert got == pytest.approx(corpus_bleu(refs, other, "13a")[0])


def test_evaluate_beam_sizes_and_decoding_limit(monkeypatch):
    import prune_cli.decode as decode

    seen = []

    def spy(model, src, src_len, *, beam_size, alpha, max_len, bos_id, eos_id):
        seen.append((beam_size, alpha, max_len.tolist(), bos_id, eos_id))
        return [[] for _ in range(src.size(0))]

    monkeypatch.setattr(decode, "translate", spy)
    task = TranslationTask(cfg(beam_size=4, eval_beam_size=2, ratio=1.5, extra=2), torch.device("cpu"), META)
    batch = pair_batch([[4] * 9, [5], [6, 7]], [[4], [5], [6]], ["a", "b", "c"])
    task.evaluate(Copier().eval(), [batch])
    task.evaluate(Copier().eval(), [batch], final=True)
    # round(1.5 * len) + 2, at most the dataset's max_decode_len (12)
    assert seen == [(2, 1.0, [12, 4, 5], BOS, EOS), (4, 1.0, [12, 4, 5], BOS, EOS)]
    # No eval_beam_size: evaluations during training use model.beam_size too.
    c = cfg(beam_size=5)
    c.trainer.eval_beam_size = None
    assert TranslationTask(c, torch.device("cpu"), META).eval_beam_size == 5


def test_build_task_by_model_task():
    c = cfg()
    assert isinstance(build_task(c, torch.device("cpu"), META), TranslationTask)
    c.model.task = "nope"
    with pytest.raises(ValueError, match="unknown model.task 'nope'; valid: language_model, classification, translation"):
        build_task(c, torch.device("cpu"), META)


def test_corpus_bleu_signature_and_tokenizers():
    score, sig = corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"], "13a")
    assert score == pytest.approx(100.0) and "tok:13a" in sig and "nrefs:1" in sig
    # "none": scored as given (WMT16's tokenized BLEU); 13a splits the full stop off.
    assert corpus_bleu(["a b c d."], ["a b c d ."], "none")[0] < corpus_bleu(["a b c d."], ["a b c d ."], "13a")[0]
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        corpus_bleu(["a", "b"], ["a"], "13a")


# -- learning-rate schedules and recipes ------------------------------------------------------
PAPER = OmegaConf.create({
    "optim": {"name": "sgd", "lr": 1.0, "clip_grad_norm": 5.0,
              "lr_schedule": {"name": "step_decay", "constant_steps": 170000, "decay_steps": 17000, "decay": 0.5},
              "from_trained": {"lr": 0.5, "lr_schedule": {"constant_steps": 70000}, "steps": 240000}},
    "trainer": {"steps": 340000, "epochs": 1},
})


def test_paper_dense_schedule_luong10():
    o, planned = recipe(PAPER, from_trained=False, steps_per_epoch=1000)
    assert planned == 340000 and o.lr == 1.0 and "from_trained" not in o
    lr = lambda s: learning_rate(o, s, 1000, planned)
    assert [lr(0), lr(169999), lr(170000), lr(186999), lr(187000), lr(339999)] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5 ** 9]


def test_paper_sparse_from_trained_schedule():
    o, planned = recipe(PAPER, from_trained=True, steps_per_epoch=1000)
    assert planned == 240000 and o.lr == 0.5 and o.lr_schedule.decay_steps == 17000
    lr = lambda s: learning_rate(o, s, 1000, planned)
    assert [lr(0), lr(69999), lr(70000), lr(86999), lr(87000), lr(239999)] == [0.5, 0.5, 0.5, 0.5, 0.25, 0.5 ** 10]


@settings(max_examples=50, deadline=None)
@given(step=st.integers(0, 400000), const=st.integers(0, 1000), every=st.integers(1, 500))
def test_step_decay_is_staircase(step, const, every):
    o = OmegaConf.create({"lr": 2.0, "lr_schedule": {"name": "step_decay", "constant_steps": const,
                                                       "decay_steps": every, "decay": 0.5}})
    want = 2.0 if step < const else 2.0 * 0.5 ** ((step - const) // every)
    assert learning_rate(o, step, 7, 10) == want


def test_recipe_epochs_and_sparse_lr_factor():
    c = OmegaConf.create({"optim": {"name": "adam", "lr": 1e-3, "sparse_lr_factor": 0.1,
                                    "lr_schedule": {"name": "constant"}}, "trainer": {"epochs": 6}})
    assert recipe(c, False, 450) == (OmegaConf.create({**c.optim}), 2700)
    o, planned = recipe(c, True, 450)
    assert o.lr == pytest.approx(1e-4) and planned == 2700  # section 4.1: the same schedule, 10x smaller
    c.optim.from_trained = {"lr": 5e-4, "epochs": 2.5}
    o, planned = recipe(c, True, 450)
    assert o.lr == 5e-4 and planned == 1125 and o.lr_schedule.name == "constant"
    assert recipe(c, False, 450)[0].lr == 1e-3  # a dense (or from-scratch) run ignores the block


# -- family checks ----------------------------------------------------------------------------
def test_family_check_messages():
    check_family("gnmt", "translation", "multi30k", "translation")
    check_family("x", None, "ptb", "language_model")  # a model without a task is not checked
    assert datasets_for("language_model") == ["ptb"]
    with pytest.raises(ConfigError) as e:
        check_family("ptb_lstm", "language_model", "cifar10", "classification")
    assert str(e.value) == ("model ptb_lstm is a language_model model but data=cifar10 is a classification "
                            "dataset; use data=ptb")


def test_family_choices_on_the_command_line():
    check_family_choices(["data=ptb"])  # the default model is the PTB LSTM
    check_family_choices(["model=mobilenet", "data=cifar10,fake_imagenet"])
    check_family_choices(["model=mobilenet"])  # the model picks its own dataset
    with pytest.raises(ConfigError, match="model ptb_lstm is a language_model model but data=cifar10"):
        check_family_choices(["data=ptb,cifar10"])
    with pytest.raises(ConfigError, match="model mobilenet is a classification model but data=ptb"):
        check_family_choices(["-m", "experiment=cifar10_mobilenet", "data=ptb"])
    with pytest.raises(ConfigError, match="model mobilenet is a classification model but data=ptb"):
        check_family_choices(["model=ptb_lstm,mobilenet", "data=ptb"])
