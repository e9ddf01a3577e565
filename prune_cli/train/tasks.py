"""Task hooks: what differs between families inside the one training loop.

A task turns a batch into a training loss, carries any state across batches (the LM's
hidden state), and evaluates a split into metrics. The loop never looks inside a batch.
"""
import math

import torch
import torch.nn.functional as F


def _to(batch, device):
    return tuple(t.to(device, non_blocking=True) for t in batch)


class LanguageModelTask:
    """Next-word prediction with the hidden state carried across batches (truncated BPTT)."""

    primary = "perplexity"
    lower_is_better = True

    def __init__(self, cfg, device):
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
        return {"loss": per_token, "perplexity": math.exp(min(per_token, 700.0))}

    @torch.no_grad()
    def evaluate(self, model, batches) -> dict:
        """Word-level perplexity: exp of the mean NLL over every target of the split."""
        nll, count, hidden = 0.0, 0, None
        for batch in batches:
            x, y = _to(batch, self.device)
            logits, hidden = model(x, hidden)
            nll += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum"))
            count += y.numel()
        loss = nll / count
        return {"loss": loss, "perplexity": math.exp(loss), "tokens": count}

    def state_dict(self) -> dict:
        return {"hidden": None if self.hidden is None else tuple(h.cpu() for h in self.hidden)}

    def load_state_dict(self, state: dict) -> None:
        h = state.get("hidden")
        self.hidden = None if h is None else tuple(t.to(self.device) for t in h)


class ClassificationTask:
    """Image classification; InceptionV3's auxiliary head adds aux_weight * its loss in training."""

    primary = "top1"
    lower_is_better = False

    def __init__(self, cfg, device):
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
    def evaluate(self, model, batches) -> dict:
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
                "images": count}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


TASKS = {"language_model": LanguageModelTask, "classification": ClassificationTask}


def build_task(cfg, device):
    name = cfg.model.task
    if name not in TASKS:
        raise ValueError(f"unknown model.task '{name}'; valid: {', '.join(TASKS)}")
    return TASKS[name](cfg, device)
