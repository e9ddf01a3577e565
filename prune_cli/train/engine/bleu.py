"""Corpus BLEU with sacrebleu, and the signature that says how the number was computed.

sacrebleu (pinned) is the reference implementation; this module only fixes how the project
calls it, so that every run's summary.json carries a score and the exact signature behind it
(tokenizer, case, smoothing, sacrebleu version). WMT16 scores tokenized text with
``tokenize="none"`` (the paper's multi-bleu convention); Multi30k scores detokenized text with
``"13a"`` (sacrebleu's standard). The dataset says which (``meta["bleu_tokenize"]``).
"""
from typing import Sequence, Tuple


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], tokenize: str) -> Tuple[float, str]:
    """BLEU (0-100) of ``hyps`` against one reference each, and sacrebleu's signature string."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    from sacrebleu.metrics import BLEU  # here: only runs that score BLEU pay for sacrebleu's import

    metric = BLEU(tokenize=tokenize)
    score = metric.corpus_score(list(hyps), [list(refs)])
    return float(score.score), str(metric.get_signature())
