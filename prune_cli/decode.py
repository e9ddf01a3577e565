"""Greedy decoding and batched beam search for the translation family (GNMT, issue 9).

``translate(model, src, src_len, *, beam_size, alpha, max_len, bos_id, eos_id)`` returns one
hypothesis per source row (token ids without bos and eos). ``beam_size == 1`` is greedy
decoding (arg max at every step, as TF NMT's greedy mode); ``beam_size > 1`` is beam search as
TF NMT's BeamSearchDecoder does it, the paper's setting:

- The whole batch at once: the source is encoded once and its memory repeated ``beam_size``
  times; every step is one ``model.decode_step`` over all live beams of all sentences.
- Candidates are ranked by the GNMT length-penalised score log P(y) / lp(|y|),
  lp(n) = ((5 + n) / 6) ** alpha, where |y| counts the tokens before eos (TF NMT's length).
- A finished hypothesis keeps its beam slot: its only continuation is eos at probability 1
  (score and length unchanged), so it competes with the live ones at every step.
- A sentence is done when all its beams are finished or after ``max_len`` steps (its own
  limit when ``max_len`` is a [B] tensor); a hypothesis cut off by the limit is returned
  without eos. The answer is the sentence's beam with the best penalised score.
- Done sentences leave the batch (their rows are dropped from every tensor), so a long
  sentence does not make the short ones pay for its steps.

Neither decoder emits the model's pad id or ``bos_id``: the training loss never has them as
targets. Both decoders run under ``torch.no_grad`` with the model in eval mode (its previous
mode is restored afterwards). The model provides ``encode(src, src_len) -> (enc, state)`` and
``decode_step(tokens, state, enc) -> (logits, state)``; ``enc`` (a NamedTuple) and ``state`` (a
tuple) hold tensors with the rows as dimension 0, which is all that reordering beams needs.

Hand-written because no installed library decodes an arbitrary PyTorch seq2seq with TF NMT's
beam semantics (fairseq and OpenNMT bring their own model interfaces and differ in how they
keep finished hypotheses and measure length).
"""
from typing import List, Sequence, Union

import torch


def length_penalty(length: torch.Tensor, alpha: float, dtype=torch.float64) -> torch.Tensor:
    """GNMT's lp(n) = ((5 + n) / 6) ** alpha."""
    return ((5.0 + length.to(dtype)) / 6.0) ** alpha


def _select_rows(tensors: Sequence[torch.Tensor], index: torch.Tensor):
    return type(tensors)(*(t.index_select(0, index) for t in tensors)) if hasattr(tensors, "_fields") \
        else tuple(t.index_select(0, index) for t in tensors)


def _limits(max_len: Union[int, torch.Tensor], batch: int) -> torch.Tensor:
    if torch.is_tensor(max_len):
        limit = max_len.detach().to("cpu", torch.long).reshape(-1)
        if limit.numel() != batch:
            raise ValueError(f"max_len has {limit.numel()} entries for a batch of {batch}")
        return limit
    return torch.full((batch,), int(max_len), dtype=torch.long)


def translate(model, src: torch.Tensor, src_len: torch.Tensor, *, beam_size: int, alpha: float,
              max_len: Union[int, torch.Tensor], bos_id: int, eos_id: int) -> List[List[int]]:
    """Decode every row of ``src``: a list of B token-id lists (no bos, no eos)."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            limit = _limits(max_len, src.size(0))
            banned = sorted({int(model.pad_id), int(bos_id)})
            if beam_size == 1:
                return _greedy(model, src, src_len, limit, banned, bos_id, eos_id)
            return _beam(model, src, src_len, limit, banned, beam_size, alpha, bos_id, eos_id)
    finally:
        model.train(was_training)


def _greedy(model, src, src_len, limit, banned, bos_id, eos_id) -> List[List[int]]:
    batch = src.size(0)
    out: List[List[int]] = [[] for _ in range(batch)]
    rows = torch.nonzero(limit > 0).squeeze(1)  # original row of each live row
    if rows.numel() == 0:
        return out
    enc, state = model.encode(src, src_len)
    dev_rows = rows.to(src.device)
    enc, state = _select_rows(enc, dev_rows), _select_rows(state, dev_rows)
    limit = limit[rows]
    tokens = torch.full((rows.numel(),), bos_id, dtype=torch.long, device=src.device)
    history = []
    for t in range(int(limit.max())):
        logits, state = model.decode_step(tokens, state, enc)
        logits[:, banned] = float("-inf")
        tokens = logits.argmax(dim=1)
        history.append(tokens)
        done = (tokens == eos_id).cpu() | (limit <= t + 1)
        if done.any():
            seqs = torch.stack(history, dim=1).cpu()
            for i in torch.nonzero(done).squeeze(1).tolist():
                out[int(rows[i])] = [w for w in seqs[i].tolist() if w != eos_id]
            keep = torch.nonzero(~done).squeeze(1)
            if keep.numel() == 0:
                break
            dev_keep = keep.to(src.device)
            enc, state = _select_rows(enc, dev_keep), _select_rows(state, dev_keep)
            tokens, rows, limit = tokens[dev_keep], rows[keep], limit[keep]
            history = [h[dev_keep] for h in history]
    return out


def _beam(model, src, src_len, limit, banned, beam, alpha, bos_id, eos_id) -> List[List[int]]:
    batch, device = src.size(0), src.device
    out: List[List[int]] = [[] for _ in range(batch)]
    rows = torch.nonzero(limit > 0).squeeze(1)
    if rows.numel() == 0:
        return out
    enc, state = model.encode(src, src_len)
    expand = rows.to(device).repeat_interleave(beam)  # row r -> rows r*beam .. r*beam + beam-1
    enc, state = _select_rows(enc, expand), _select_rows(state, expand)
    limit = limit[rows]
    live = rows.numel()
    # Per sentence and beam: log P (in the model's dtype), tokens before eos, finished.
    dtype = state[0].dtype
    scores = torch.full((live, beam), float("-inf"), dtype=dtype, device=device)
    scores[:, 0] = 0.0  # one real hypothesis to start; the others are dead (-inf) until filled
    lengths = torch.zeros((live, beam), dtype=torch.long, device=device)
    finished = torch.isinf(scores)
    seqs = torch.zeros((live, beam, 0), dtype=torch.long, device=device)
    tokens = torch.full((live * beam,), bos_id, dtype=torch.long, device=device)
    for t in range(int(limit.max())):
        logits, state = model.decode_step(tokens, state, enc)
        logits[:, banned] = float("-inf")
        vocab = logits.size(1)
        logp = torch.log_softmax(logits, dim=1).view(live, beam, vocab)
        # A finished beam continues only with eos, at log-probability 0.
        logp = logp.masked_fill(finished.unsqueeze(2), float("-inf"))
        logp[:, :, eos_id].masked_fill_(finished, 0.0)
        cand = scores.unsqueeze(2) + logp  # [live, beam, V]
        grown = lengths + (~finished).long()  # the length after a non-eos token
        ranked = cand / length_penalty(grown, alpha, dtype).unsqueeze(2)
        ranked[:, :, eos_id] = cand[:, :, eos_id] / length_penalty(lengths, alpha, dtype)
        _, flat = ranked.view(live, beam * vocab).topk(beam, dim=1)
        origin, token = flat // vocab, flat % vocab
        scores = cand.view(live, -1).gather(1, flat)
        was_finished = finished.gather(1, origin)
        lengths = lengths.gather(1, origin) + (~was_finished & (token != eos_id)).long()
        finished = was_finished | (token == eos_id) | torch.isinf(scores)
        seqs = torch.cat([seqs.gather(1, origin.unsqueeze(2).expand(-1, -1, t)), token.unsqueeze(2)], dim=2)
        parent = (origin + torch.arange(live, device=device).unsqueeze(1) * beam).view(-1)
        state = _select_rows(state, parent)
        tokens = token.view(-1)
        done = finished.all(dim=1).cpu() | (limit <= t + 1)
        if done.any():
            best = (scores / length_penalty(lengths, alpha, dtype)).argmax(dim=1)
            for i in torch.nonzero(done).squeeze(1).tolist():
                b = int(best[i])
                out[int(rows[i])] = seqs[i, b, :int(lengths[i, b])].tolist()
            keep = torch.nonzero(~done).squeeze(1)
            if keep.numel() == 0:
                break
            dev_keep = keep.to(device)
            keep_rows = (dev_keep.unsqueeze(1) * beam + torch.arange(beam, device=device)).view(-1)
            enc, state = _select_rows(enc, keep_rows), _select_rows(state, keep_rows)
            tokens = tokens[keep_rows]
            scores, lengths, finished, seqs = scores[dev_keep], lengths[dev_keep], finished[dev_keep], seqs[dev_keep]
            rows, limit, live = rows[keep], limit[keep], keep.numel()
    return out
