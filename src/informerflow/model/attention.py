"""Attention for Informer: ProbSparse self-attention (paper section 3.1) and full attention.

Shape legend: B batch, L query length, S key length, H heads, D head width (d_model / H),
E model width (d_model), U sampled keys (shared by all queries), u selected ("active") queries.

Both inner attentions take and return the (B, L, H, D) layout; ``AttentionLayer`` owns the
projections and the merge of heads, where the decoder's optional "mix" lives.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from informerflow.errors import DataError

log = logging.getLogger(__name__)


def prob_counts(factor: int, length: int) -> int:
    """``factor * ceil(ln length)`` clamped to ``1..length`` (ln 1 = 0 would give none)."""
    return max(1, min(length, factor * math.ceil(math.log(length))))


class FullAttention(nn.Module):
    """Canonical softmax attention through ``scaled_dot_product_attention``."""

    def __init__(self, causal: bool = False, dropout: float = 0.0):
        super().__init__()
        self.causal = causal
        self.dropout = dropout

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # (B, L, H, D) -> (B, H, L, D), the layout SDPA wants
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=self.causal
        )
        return out.transpose(1, 2)  # (B, H, L, D) -> (B, L, H, D)


class ProbAttention(nn.Module):
    """ProbSparse self-attention: only the u most "active" queries attend; the rest are lazy.

    A query's activity is the max-mean measurement M(q, K) = max_j s_j - mean_j s_j over
    U = factor * ceil(ln S) keys sampled without replacement (paper eq. 4, section 3.1); the
    paper's code draws a separate sample per query, here all queries share one sample. The top
    u = factor * ceil(ln L) queries get full attention; the others output mean(V), or cumsum(V)
    in the masked (decoder) case, as the paper's code does. Both counts are clamped to 1..length.
    Known quirk, kept for fidelity: cumsum is not normalised, so a lazy decoder query's output
    grows with its position; the LayerNorm after the residual absorbs most of that.

    In eval mode the key sample comes from a local generator seeded with ``seed`` on every
    forward, so a forecast is reproducible, leaves the global RNG alone and does not depend on
    the other windows in the batch (the sample has no batch dimension). Training samples from
    the global RNG.
    """

    def __init__(self, factor: int = 5, causal: bool = False, dropout: float = 0.0, seed: int = 0):
        super().__init__()
        self.factor = factor
        self.causal = causal
        self.dropout = nn.Dropout(dropout)
        self.seed = seed

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, L, H, D = q.shape
        S = k.shape[1]
        if self.causal and L != S:
            raise DataError(
                f"masked ProbSparse attention needs as many queries as keys, got {L} and {S}"
            )
        # (B, L, H, D) -> (B, H, L, D)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        n_top = prob_counts(self.factor, L)
        with torch.no_grad():
            top = self._measure(q, k).topk(n_top, dim=-1, sorted=False).indices  # (B, H, u)

        top_q = q.gather(2, top.unsqueeze(-1).expand(-1, -1, -1, D))  # (B, H, u, D)
        scores = top_q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, u, S)
        if self.causal:
            future = torch.arange(S, device=q.device) > top.unsqueeze(-1)  # (B, H, u, S)
            scores = scores.masked_fill(future, float("-inf"))
        active = self.dropout(scores.softmax(dim=-1)) @ v  # (B, H, u, D)

        context = self._lazy_context(v, L)  # (B, H, L, D)
        context = context.scatter(2, top.unsqueeze(-1).expand(-1, -1, -1, D), active)
        return context.transpose(1, 2)  # (B, H, L, D) -> (B, L, H, D)

    def _measure(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Max-mean measurement of each query over the sampled keys: (B, H, L)."""
        D, S = q.shape[-1], k.shape[2]
        n_sample = prob_counts(self.factor, S)
        if n_sample < S:
            generator = None if self.training else torch.Generator().manual_seed(self.seed)
            # One sample of U distinct keys for every query, batch item and head: the queries are
            # ranked against the same keys, one matmul scores them all, and no item's forecast
            # depends on the batch. Drawn on the CPU so eval forecasts match across devices.
            keys = torch.randperm(S, generator=generator)[:n_sample].to(k.device)  # (U,)
            k = k[:, :, keys]  # (B, H, S, D) -> (B, H, U, D)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, L, U)
        return scores.amax(-1) - scores.mean(-1)

    def _lazy_context(self, v: torch.Tensor, L: int) -> torch.Tensor:
        """What unselected queries output: mean(V), or cumsum(V) under the causal mask."""
        if self.causal:
            return v.cumsum(dim=2)
        B, H, _, D = v.shape
        return v.mean(dim=2, keepdim=True).expand(B, H, L, D).contiguous()


class AttentionLayer(nn.Module):
    """Multi-head wrapper: project to heads, run the inner attention, merge heads, project out.

    With ``mix=True`` the merged output is read from the (B, H, L, D) layout as if it were
    (B, L, H * D), so each output step blends several time steps of one head. The paper's code
    does this in the decoder's self-attention; here it is an explicit option (``cfg.mix``).
    """

    def __init__(self, inner: nn.Module, d_model: int, n_heads: int, mix: bool = False):
        super().__init__()
        self.inner = inner
        self.n_heads = n_heads
        self.mix = mix
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        B, L, E = queries.shape
        S, H = keys.shape[1], self.n_heads
        q = self.q_proj(queries).view(B, L, H, E // H)  # (B, L, E) -> (B, L, H, D)
        k = self.k_proj(keys).view(B, S, H, E // H)  # (B, S, E) -> (B, S, H, D)
        v = self.v_proj(values).view(B, S, H, E // H)
        out = self.inner(q, k, v)  # (B, L, H, D)
        if self.mix:
            # (B, L, H, D) -> (B, H, L, D), then read as (B, L, H * D): heads and time mix
            out = out.transpose(1, 2).contiguous().view(B, L, E)
        else:
            out = out.reshape(B, L, E)  # (B, L, H, D) -> (B, L, E)
        return self.out_proj(out)
