"""Informer and InformerStack (Zhou et al., AAAI 2021), built from ``ModelConfig``.

Shape legend: B batch, L encoder length (seq_len), S decoder start (label_len), P horizon
(pred_len), C input channels, O output channels (c_out), F time features, E model width.

The encoder alternates ProbSparse self-attention layers with distilling steps that halve the
sequence (section 3.2); the generative decoder (section 3.3) reads the last S known steps followed
by P zero placeholders and forecasts all P steps in one forward pass.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from informerflow.config import ModelConfig
from informerflow.errors import ConfigError, DataError
from informerflow.model.attention import AttentionLayer, FullAttention, ProbAttention
from informerflow.model.embed import DataEmbedding
from informerflow.model.revin import RevIN
from informerflow.timefeatures import n_time_features

log = logging.getLogger(__name__)


def _self_attention(cfg: ModelConfig, causal: bool, mix: bool, seed: int) -> AttentionLayer:
    if cfg.attn == "prob":
        inner: nn.Module = ProbAttention(cfg.factor, causal, cfg.dropout, seed)
    else:
        inner = FullAttention(causal, cfg.dropout)
    return AttentionLayer(inner, cfg.d_model, cfg.n_heads, mix=mix)


class FeedForward(nn.Module):
    """Position-wise two-layer MLP."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)
        self.act = F.gelu if activation == "gelu" else F.relu
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.dropout(self.act(self.up(x))))


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward, each with a residual and post-LayerNorm."""

    def __init__(self, attention: AttentionLayer, cfg: ModelConfig):
        super().__init__()
        self.attention = attention
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout, cfg.activation)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attention(x, x, x)))
        return self.norm2(x + self.dropout(self.ff(x)))


class DistilLayer(nn.Module):
    """Self-attention distilling (section 3.2): conv, BatchNorm, ELU, then max-pool by 2.

    Pooling with kernel 3, stride 2 and padding 1 maps L to ceil(L / 2) exactly (96 -> 48,
    95 -> 48, 7 -> 4); the convolution keeps L by padding one step circularly on each side.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=3, padding=1, padding_mode="circular")
        self.norm = nn.BatchNorm1d(d_model)
        self.pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, L, E) -> (B, E, L)
        x = self.pool(F.elu(self.norm(self.conv(x))))  # (B, E, L) -> (B, E, ceil(L / 2))
        return x.transpose(1, 2)  # (B, E, L') -> (B, L', E)


class Encoder(nn.Module):
    """``depth`` attention layers with a distilling step between consecutive ones."""

    def __init__(self, cfg: ModelConfig, depth: int, seed: int = 0):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(_self_attention(cfg, causal=False, mix=False, seed=seed + i), cfg)
            for i in range(depth)
        )
        n_distil = depth - 1 if cfg.distil else 0
        self.distils = nn.ModuleList(DistilLayer(cfg.d_model) for _ in range(n_distil))
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.distils):
                x = self.distils[i](x)  # (B, L, E) -> (B, ceil(L / 2), E)
        return self.norm(x)


class EncoderStack(nn.Module):
    """InformerStack's encoder (appendix): encoder i reads the last ceil(L / 2^i) steps.

    The outputs are concatenated along time, so the decoder cross-attends to all of them.
    """

    def __init__(self, cfg: ModelConfig, depths: tuple[int, ...]):
        super().__init__()
        self.encoders = nn.ModuleList(
            Encoder(cfg, depth, seed=100 * (i + 1)) for i, depth in enumerate(depths)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        outs = [enc(x[:, -math.ceil(L / 2**i):]) for i, enc in enumerate(self.encoders)]
        return torch.cat(outs, dim=1)  # (B, sum of L_i, E)


class DecoderLayer(nn.Module):
    """Masked self-attention, full cross-attention to the encoder, feed-forward."""

    def __init__(self, cfg: ModelConfig, seed: int):
        super().__init__()
        self.self_attention = _self_attention(cfg, causal=True, mix=cfg.mix, seed=seed)
        # Cross-attention is always full (section 3.3): the decoder queries are few.
        self.cross_attention = AttentionLayer(
            FullAttention(causal=False, dropout=cfg.dropout), cfg.d_model, cfg.n_heads
        )
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout, cfg.activation)
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.d_model) for _ in range(3))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = self.norms[0](x + self.dropout(self.self_attention(x, x, x)))
        x = self.norms[1](x + self.dropout(self.cross_attention(x, memory, memory)))
        return self.norms[2](x + self.dropout(self.ff(x)))


class Decoder(nn.Module):
    """The generative decoder's layers, a final LayerNorm and the projection to c_out."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg, seed=1000 + i) for i in range(cfg.d_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.projection = nn.Linear(cfg.d_model, cfg.c_out)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory)
        return self.projection(self.norm(x))  # (B, S + P, E) -> (B, S + P, O)


class Informer(nn.Module):
    """The Informer forecaster: ``forward(x_enc, x_mark_enc, x_dec, x_mark_dec) -> (B, P, O)``.

    ``x_dec`` is the last S encoder steps followed by P zeros; the caller builds it.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        check_model_config(cfg)
        self.cfg = cfg
        n_marks = n_time_features(cfg.freq, cfg.embed)
        self.n_marks = n_marks
        self.enc_embedding = DataEmbedding(cfg.enc_in, cfg.d_model, cfg.embed, n_marks, cfg.dropout)
        self.dec_embedding = DataEmbedding(cfg.dec_in, cfg.d_model, cfg.embed, n_marks, cfg.dropout)
        self.encoder = self._build_encoder(cfg)
        self.decoder = Decoder(cfg)
        self.revin = RevIN(cfg.enc_in) if cfg.revin else None

    def _build_encoder(self, cfg: ModelConfig) -> nn.Module:
        return Encoder(cfg, cfg.e_layers)

    def forward(
        self,
        x_enc: torch.Tensor,
        x_mark_enc: torch.Tensor,
        x_dec: torch.Tensor,
        x_mark_dec: torch.Tensor,
    ) -> torch.Tensor:
        self._check_inputs(x_enc, x_mark_enc, x_dec, x_mark_dec)
        if self.revin is not None:
            mean, std = self.revin.stats(x_enc)
            x_enc = self.revin.normalise(x_enc, mean, std)
            # Only the known steps are data; the placeholders stay zero (the normalised mean).
            S = self.cfg.label_len
            known = self.revin.normalise(x_dec[:, :S], mean, std)
            x_dec = torch.cat([known, torch.zeros_like(x_dec[:, S:])], dim=1)

        memory = self.encoder(self.enc_embedding(x_enc, x_mark_enc))  # (B, L', E)
        out = self.decoder(self.dec_embedding(x_dec, x_mark_dec), memory)  # (B, S + P, O)
        out = out[:, -self.cfg.pred_len:]  # (B, P, O)
        if self.revin is not None:
            out = self.revin.denormalise(out, mean, std)
        return out

    def _check_inputs(
        self,
        x_enc: torch.Tensor,
        x_mark_enc: torch.Tensor,
        x_dec: torch.Tensor,
        x_mark_dec: torch.Tensor,
    ) -> None:
        """Raise DataError naming every input whose shape does not match the config."""
        cfg = self.cfg
        B = x_enc.shape[0]
        dec_len = cfg.label_len + cfg.pred_len
        expected = {
            "x_enc": (x_enc, (B, cfg.seq_len, cfg.enc_in)),
            "x_mark_enc": (x_mark_enc, (B, cfg.seq_len, self.n_marks)),
            "x_dec": (x_dec, (B, dec_len, cfg.dec_in)),
            "x_mark_dec": (x_mark_dec, (B, dec_len, self.n_marks)),
        }
        problems = [
            f"{name} has shape {tuple(t.shape)}, expected {shape}"
            for name, (t, shape) in expected.items()
            if tuple(t.shape) != shape
        ]
        if problems:
            raise DataError(
                "model inputs do not match the config (seq_len, label_len + pred_len, channels, "
                f"freq {cfg.freq!r} / embed {cfg.embed!r}): " + "; ".join(problems)
            )


class InformerStack(Informer):
    """Informer whose encoder is a stack over progressively halved input tails (``cfg.stack``)."""

    def _build_encoder(self, cfg: ModelConfig) -> nn.Module:
        return EncoderStack(cfg, tuple(cfg.stack or (cfg.e_layers,)))


def check_model_config(cfg: ModelConfig) -> None:
    """Raise ConfigError listing every model setting this module cannot build."""
    problems = []
    for name in ("seq_len", "pred_len", "enc_in", "dec_in", "c_out", "d_model", "n_heads",
                 "e_layers", "d_layers", "d_ff", "factor"):
        if getattr(cfg, name) < 1:
            problems.append(f"model.{name} must be 1 or more, got {getattr(cfg, name)}")
    if not 0 <= cfg.label_len <= cfg.seq_len:
        problems.append(f"model.label_len ({cfg.label_len}) must be in 0..seq_len ({cfg.seq_len})")
    if cfg.n_heads >= 1 and cfg.d_model % cfg.n_heads:
        problems.append(f"model.d_model ({cfg.d_model}) must be divisible by n_heads "
                        f"({cfg.n_heads})")
    choices = {"attn": ("prob", "full"), "embed": ("timeF", "fixed", "learned"),
               "activation": ("gelu", "relu")}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            problems.append(f"model.{name} must be one of {', '.join(allowed)}; "
                            f"got {getattr(cfg, name)!r}")
    if cfg.stack is not None and (not cfg.stack or min(cfg.stack) < 1):
        problems.append(f"model.stack must list encoder depths of 1 or more, got {cfg.stack}")
    if cfg.revin and cfg.c_out > cfg.enc_in:
        problems.append(f"model.revin needs c_out ({cfg.c_out}) <= enc_in ({cfg.enc_in}): "
                        "outputs are de-normalised with the last c_out input channels' stats")
    if cfg.revin and cfg.dec_in != cfg.enc_in:
        problems.append(f"model.revin needs dec_in ({cfg.dec_in}) == enc_in ({cfg.enc_in}): the "
                        "decoder's known steps are normalised with the encoder window's stats")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"invalid model configuration:\n{lines}")
    n_time_features(cfg.freq, cfg.embed)  # raises ConfigError naming an unknown freq


def build_model(cfg: ModelConfig) -> nn.Module:
    """Informer, or InformerStack when ``cfg.stack`` lists encoder depths.

    Raises:
        ConfigError: listing every invalid model setting.
    """
    model = InformerStack(cfg) if cfg.stack else Informer(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("built %s: %d parameters, attn=%s, d_model=%d, seq_len=%d, pred_len=%d",
             type(model).__name__, n_params, cfg.attn, cfg.d_model, cfg.seq_len, cfg.pred_len)
    return model
