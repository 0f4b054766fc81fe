"""Temperature scaling of a recommender's item distribution (Guo et al., ICML 2017). Plain torch.

``p_T(i | x) = softmax(s(x) / T)_i``: one scalar T > 0 fitted on held-out examples by minimising
the mean negative log-likelihood of the gold item. Rankings (recall@k, MRR) do not change; the
probabilities do, and they are what the ConKD student distils (issue [zoo-training]: a teacher
whose distribution is not calibrated teaches the student a wrong spread over items).

The NLL is convex in the inverse temperature beta = 1/T (``-beta s_gold + logsumexp(beta s)``:
a linear term plus a log-sum-exp), so Newton's method on beta converges in a few steps:
gradient ``E_p[s] - s_gold``, curvature ``Var_p[s] >= 0``.
"""

from dataclasses import dataclass
from typing import Dict

import torch

#: search range of the temperature (beyond it a model is either uniform or one-hot in practice)
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def mean_nll(
    scores: torch.Tensor, gold: torch.Tensor, temperature: float = 1.0
) -> float:
    """Mean ``-log softmax(scores / T)[gold]`` over rows; ``scores`` ``[M, N]``, ``gold`` ``[M]``."""
    log_p = torch.log_softmax(scores.double() / temperature, dim=-1)
    return float(-log_p.gather(1, gold.view(-1, 1)).mean())


def fit_temperature(
    scores: torch.Tensor, gold: torch.Tensor, steps: int = 50, tol: float = 1e-7
) -> float:
    """The T minimising :func:`mean_nll` (Newton on beta = 1/T, clamped to the search range).

    ``scores``: ``[M, N]`` logits (``-inf`` allowed for excluded items, never at the gold item);
    ``gold``: ``[M]`` catalog indices. Raises ``ValueError`` on empty input.
    """
    if scores.numel() == 0 or gold.numel() == 0:
        raise ValueError('fit_temperature needs at least one scored example')
    s = scores.double()
    # excluded items: probability 0 at any beta
    s = s.masked_fill(torch.isinf(s), -1e30)
    s_gold = s.gather(1, gold.view(-1, 1)).squeeze(1)
    beta = 1.0
    lo, hi = 1.0 / MAX_TEMPERATURE, 1.0 / MIN_TEMPERATURE
    for _ in range(steps):
        p = torch.softmax(beta * s, dim=-1)
        finite = torch.where(p > 0, s, torch.zeros_like(s))
        mean = (p * finite).sum(dim=-1)
        var = (p * finite * finite).sum(dim=-1) - mean * mean
        grad = float((mean - s_gold).mean())
        curv = float(var.mean())
        if curv <= 0:
            break
        new_beta = min(max(beta - grad / curv, lo), hi)
        if abs(new_beta - beta) < tol * max(1.0, beta):
            beta = new_beta
            break
        beta = new_beta
    return 1.0 / beta


@dataclass
class Sharpness:
    """How peaked a recommender's distributions are (nats; uniform over N items = ln N)."""

    top1_prob: float
    entropy: float
    gold_nll: float

    def as_dict(self, prefix: str = '') -> Dict[str, float]:
        return {
            f'{prefix}top1_prob': self.top1_prob,
            f'{prefix}entropy': self.entropy,
            f'{prefix}gold_nll': self.gold_nll,
        }


def sharpness_rows(
    scores: torch.Tensor, gold: torch.Tensor, temperature: float = 1.0
) -> Dict[str, torch.Tensor]:
    """Per row (float32 ``[M]`` each): ``top1_prob``, ``entropy`` (nats) and ``gold_nll`` of
    ``softmax(scores / T)``; the means are :func:`sharpness`."""
    log_p = torch.log_softmax(scores.double() / temperature, dim=-1)
    p = log_p.exp()
    return {
        'top1_prob': p.max(dim=-1).values.float(),
        'entropy': (-(p * log_p.masked_fill(p == 0, 0.0)).sum(dim=-1)).float(),
        'gold_nll': (-log_p.gather(1, gold.view(-1, 1)).squeeze(1)).float(),
    }


def sharpness(
    scores: torch.Tensor, gold: torch.Tensor, temperature: float = 1.0
) -> Sharpness:
    """Mean top-1 probability, entropy and gold NLL of ``softmax(scores / T)`` over rows."""
    rows = sharpness_rows(scores, gold, temperature)
    return Sharpness(
        **{name: float(values.double().mean()) for name, values in rows.items()}
    )
