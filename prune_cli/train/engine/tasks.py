"""Task hooks: what differs between families inside the one training loop.

A task turns a batch into a training loss, carries any state across batches (the LM's
hidden state), and evaluates a split into metrics (floats: they go to metrics.csv). The loop
never looks inside a batch. ``evaluate(..., final=True)`` is the run's last evaluation, which
may cost more than the ones during training (translation: beam search instead of greedy).
Each task owns its fields of summary.json (``summary_fields``): perplexity, top-1/5, BLEU.
"""
import math

import torch
import torch.nn.functional as F

from prune_cli.config import task_name
from prune_cli import decode
from prune_cli.train.engine.bleu import corpus_bleu


def _to(batch, device):
    return tuple(t.to(device, non_blocking=True) for t in batch)


def perplexity(loss: float) -> float:
    """exp(loss): inf where the float overflows (a diverged model), never an exception."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def _perplexity_fields(final: dict) -> dict:
    """summary.json's perplexity (test) and val_perplexity, when the final evaluation measured one."""
    if "perplexity" in final.get("test", {}) or "perplexity" in final.get("valid", {}):
        return {"perplexity": final.get("test", {}).get("perplexity"),
                "val_perplexity": final.get("valid", {}).get("perplexity")}
    return {}


class LanguageModelTask:
    """Next-word prediction with the hidden state carried across batches (truncated BPTT)."""

    primary = "perplexity"
    lower_is_better = True

    def __init__(self, cfg, device, meta=None):
        self.device = device
        self.hidden = None
        self.bptt = cfg.data.bptt

    def start_epoch(self, epoch: int) -> None:
        self.hidden = None  # Zaremba: every epoch starts from a zero state

    def loss(self, model, batch):
        """The NLL summed over the unrolled steps and averaged over the batch: the objective of
        Zaremba et al. and of the paper's TF code, for which learning rate 1 and clip 5 are set
        (a per-token mean would shrink every step bptt-fold)."""
        x, y = _to(batch, self.device)
        logits, hidden = model(x, self.hidden)
        self.hidden = tuple(h.detach() for h in hidden)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum") / x.size(0)

    def train_metrics(self, mean_loss: float) -> dict:
        per_token = mean_loss / self.bptt
        return {"loss": per_token, "perplexity": perplexity(per_token)}

    @torch.no_grad()
    def evaluate(self, model, batches, final: bool = False) -> dict:
        """Word-level perplexity: exp of the mean NLL over every target of the split."""
        nll, count, hidden = 0.0, 0, None
        for batch in batches:
            x, y = _to(batch, self.device)
            logits, hidden = model(x, hidden)
            nll += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum"))
            count += y.numel()
        loss = nll / count
        return {"loss": loss, "perplexity": perplexity(loss), "tokens": float(count)}

    def summary_fields(self, final: dict, meta: dict) -> dict:
        """``final``: split -> metrics of the run's last evaluation."""
        return _perplexity_fields(final)

    def state_dict(self) -> dict:
        return {"hidden": None if self.hidden is None else tuple(h.cpu() for h in self.hidden)}

    def load_state_dict(self, state: dict) -> None:
        h = state.get("hidden")
        self.hidden = None if h is None else tuple(t.to(self.device) for t in h)


class ClassificationTask:
    """Image classification; InceptionV3's auxiliary head adds aux_weight * its loss in training."""

    primary = "top1"
    lower_is_better = False

    def __init__(self, cfg, device, meta=None):
        self.device = device
        self.label_smoothing = cfg.optim.get("label_smoothing", 0.0)
        self.aux_weight = cfg.optim.get("aux_weight", 0.4)
        self.channels_last = cfg.trainer.get("channels_last", False)

    def start_epoch(self, epoch: int) -> None:
        pass

    def _images(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def loss(self, model, batch):
        x, y = _to(batch, self.device)
        out = model(self._images(x))
        if isinstance(out, tuple) and hasattr(out, "aux_logits"):  # torchvision InceptionOutputs
            loss = F.cross_entropy(out.logits, y, label_smoothing=self.label_smoothing)
            if out.aux_logits is not None:
                loss = loss + self.aux_weight * F.cross_entropy(out.aux_logits, y, label_smoothing=self.label_smoothing)
            return loss
        return F.cross_entropy(out, y, label_smoothing=self.label_smoothing)

    def train_metrics(self, mean_loss: float) -> dict:
        return {"loss": mean_loss}

    @torch.no_grad()
    def evaluate(self, model, batches, final: bool = False) -> dict:
        correct1 = correct5 = count = 0
        loss = 0.0
        for batch in batches:
            x, y = _to(batch, self.device)
            logits = model(self._images(x))
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            top5 = logits.topk(min(5, logits.size(1)), dim=1).indices
            hit = top5 == y[:, None]
            correct1 += int(hit[:, 0].sum())
            correct5 += int(hit.any(dim=1).sum())
            count += y.numel()
        return {"loss": loss / count, "top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count,
                "images": float(count)}

    def summary_fields(self, final: dict, meta: dict) -> dict:
        for split in ("val", "test"):
            if "top1" in final.get(split, {}):
                return {"top1": final[split]["top1"], "top5": final[split]["top5"], "eval_split": split}
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class TranslationTask:
    """Sequence-to-sequence translation (GNMT): teacher-forced cross-entropy, BLEU by decoding.

    Batches (data/translation contract): ``(src, src_len, tgt_in, tgt_out)`` in training,
    plus ``refs`` (one reference string per row) in evaluation; pad id 0 everywhere.
    """

    primary = "bleu"
    lower_is_better = False

    def __init__(self, cfg, device, meta=None):
        meta = meta or {}
        m = cfg.model
        self.device = device
        self.pad_id, self.bos_id, self.eos_id = meta["pad_id"], meta["bos_id"], meta["eos_id"]
        self.detokenize, self.bleu_tokenize = meta["detokenize"], meta["bleu_tokenize"]
        self.max_decode_len = int(meta["max_decode_len"])
        self.max_decode_ratio, self.max_decode_extra = float(m.max_decode_ratio), int(m.max_decode_extra)
        self.beam_size, self.alpha = int(m.beam_size), float(m.length_penalty)
        # Evaluations during training may decode with a smaller beam (conf: trainer.eval_beam_size).
        self.eval_beam_size = int(cfg.trainer.get("eval_beam_size") or m.beam_size)
        self.bleu_signature = None  # sacrebleu's signature of the last BLEU computed (summary.json)
        self._reset_counts()

    def _reset_counts(self) -> None:
        # Target tokens per sentence, summed over the batches since the last train metrics row:
        # a tensor on the batch's device, so that counting costs no device sync per step.
        self.tokens_per_sentence, self.batches = None, 0

    def start_epoch(self, epoch: int) -> None:
        pass

    def loss(self, model, batch):
        """Cross-entropy summed over the target tokens (pad ignored) and averaged over the
        sentences: TF NMT's objective, for which its learning rate 1.0 and clip 5 are set."""
        src, src_len, tgt_in, tgt_out = batch
        count = (tgt_out != self.pad_id).sum() / tgt_out.size(0)
        self.tokens_per_sentence = count if self.tokens_per_sentence is None else self.tokens_per_sentence + count
        self.batches += 1
        src, src_len, tgt_in, tgt_out = _to(batch, self.device)
        logits = model(src, src_len, tgt_in)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                              ignore_index=self.pad_id, reduction="sum")
        return nll / src.size(0)

    def train_metrics(self, mean_loss: float) -> dict:
        """Per-token loss: the mean per-sentence loss over the mean target length of the same
        batches (exact when every batch has the same number of sentences)."""
        per_sentence = float(self.tokens_per_sentence) / self.batches if self.batches else float("nan")
        self._reset_counts()
        per_token = mean_loss / per_sentence
        return {"loss": per_token, "perplexity": perplexity(per_token)}

    def max_len(self, src_len: torch.Tensor) -> torch.Tensor:
        """Decoding limit per sentence: ratio * source length + extra tokens, at most the dataset's."""
        limit = (src_len.double() * self.max_decode_ratio).round().long() + self.max_decode_extra
        return limit.clamp(max=self.max_decode_len)

    @torch.no_grad()
    def evaluate(self, model, batches, final: bool = False) -> dict:
        """Teacher-forced per-token loss and perplexity over the split, and corpus BLEU of the
        decoded split (beam model.beam_size at the end, trainer.eval_beam_size during training)."""
        beam = self.beam_size if final else self.eval_beam_size
        nll, tokens, hyps, refs = 0.0, 0, [], []
        for src, src_len, tgt_in, tgt_out, batch_refs in batches:
            limit = self.max_len(src_len)
            src, src_len, tgt_in, tgt_out = _to((src, src_len, tgt_in, tgt_out), self.device)
            logits = model(src, src_len, tgt_in)
            nll += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                                         ignore_index=self.pad_id, reduction="sum"))
            tokens += int((tgt_out != self.pad_id).sum())
            out = decode.translate(model, src, src_len, beam_size=beam, alpha=self.alpha, max_len=limit,
                            bos_id=self.bos_id, eos_id=self.eos_id)
            hyps.extend(self.detokenize(ids) for ids in out)
            refs.extend(batch_refs)
        loss = nll / max(1, tokens)
        bleu, self.bleu_signature = corpus_bleu(hyps, refs, self.bleu_tokenize)
        return {"loss": loss, "perplexity": perplexity(loss), "bleu": bleu,
                "sentences": float(len(refs)), "tokens": float(tokens)}

    def summary_fields(self, final: dict, meta: dict) -> dict:
        fields = _perplexity_fields(final)
        if "bleu" in final.get("test", {}) or "bleu" in final.get("valid", {}):
            fields.update(bleu=final.get("test", {}).get("bleu"), val_bleu=final.get("valid", {}).get("bleu"),
                          bleu_signature=self.bleu_signature, direction=meta.get("direction"))
        return fields

    def state_dict(self) -> dict:
        return {"tokens_per_sentence": None if self.tokens_per_sentence is None else self.tokens_per_sentence.cpu(),
                "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        t = state.get("tokens_per_sentence")
        self.tokens_per_sentence, self.batches = t, state.get("batches", 0)


TASKS = {"language_model": LanguageModelTask, "classification": ClassificationTask,
         "translation": TranslationTask}


def build_task(cfg, device, meta=None):
    """The task of the run (task_name); ``meta`` is the dataset's (DataBundle.meta)."""
    name = task_name(cfg)
    if name not in TASKS:
        raise ValueError(f"unknown model.task '{name}'; valid: {', '.join(TASKS)}")
    return TASKS[name](cfg, device, meta)
