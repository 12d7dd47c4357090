"""The Informer model: shapes, clamps, determinism, distilling, attention exactness, RevIN.

Every model here is tiny (d_model 8-16) so the file runs in seconds on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from informerflow.config import ModelConfig
from informerflow.errors import ConfigError, DataError
from informerflow.model import Informer, InformerStack, build_model
from informerflow.model.attention import AttentionLayer, FullAttention, ProbAttention, prob_counts
from informerflow.model.informer import DistilLayer, EncoderStack
from informerflow.timefeatures import n_time_features

pytestmark = pytest.mark.usefixtures("one_thread")  # from conftest: tiny models, shared cores

TINY = ModelConfig(seq_len=16, label_len=8, pred_len=4, d_model=16, n_heads=2, e_layers=2,
                   d_layers=1, d_ff=32, factor=3, dropout=0.0, freq="h")


def tiny(**changes) -> ModelConfig:
    return dataclasses.replace(TINY, **changes)


def batch(cfg: ModelConfig, size: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped as the data layer builds them (placeholders are zeros)."""
    g = torch.Generator().manual_seed(seed)
    n_marks = n_time_features(cfg.freq, cfg.embed)
    dec_len = cfg.label_len + cfg.pred_len
    x_enc = torch.randn(size, cfg.seq_len, cfg.enc_in, generator=g)
    x_dec = torch.cat([x_enc[:, cfg.seq_len - cfg.label_len:],
                       torch.zeros(size, cfg.pred_len, cfg.dec_in)], dim=1)
    if cfg.embed == "timeF":
        marks = torch.rand(size, cfg.seq_len + cfg.pred_len, n_marks, generator=g) - 0.5
    else:
        marks = torch.zeros(size, cfg.seq_len + cfg.pred_len, n_marks)
    x_mark_enc = marks[:, :cfg.seq_len]
    x_mark_dec = marks[:, cfg.seq_len - cfg.label_len:]
    assert x_dec.shape[1] == x_mark_dec.shape[1] == dec_len
    return x_enc, x_mark_enc, x_dec, x_mark_dec


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("channels", "stack"),
    [((1, 1, 1), None), ((3, 3, 3), None), ((3, 3, 1), None), ((3, 3, 1), (2, 1))],
    ids=["S", "M", "MS", "MS-stack"],
)
@pytest.mark.parametrize("attn", ["prob", "full"])
def test_forecast_shape(channels: tuple[int, int, int], stack, attn: str) -> None:
    enc_in, dec_in, c_out = channels
    cfg = tiny(enc_in=enc_in, dec_in=dec_in, c_out=c_out, stack=stack, attn=attn)
    model = build_model(cfg)
    assert type(model) is (InformerStack if stack else Informer)
    assert model(*batch(cfg)).shape == (3, cfg.pred_len, c_out)


@pytest.mark.parametrize("embed", ["fixed", "learned"])
def test_calendar_embeddings_forward(embed: str) -> None:
    cfg = tiny(embed=embed, freq="15min")
    assert build_model(cfg)(*batch(cfg)).shape == (3, 4, 1)


def test_stack_encoders_read_halved_tails_and_concatenate() -> None:
    cfg = tiny(seq_len=96, stack=(3, 2, 1))
    stack = EncoderStack(cfg, cfg.stack)
    # 96 -> 48 -> 24 (3 layers), 48 -> 24 (2 layers), 24 (1 layer): 72 steps in all
    assert stack(torch.randn(2, 96, cfg.d_model)).shape == (2, 72, cfg.d_model)
    # Odd lengths round the tails up (5, 3, 2), so none is empty: 5 -> 2, 3 -> 2, 2 -> 2
    assert stack(torch.randn(2, 5, cfg.d_model)).shape == (2, 6, cfg.d_model)


# ---------------------------------------------------------------- clamps


def test_prob_counts_are_clamped_to_the_length() -> None:
    assert prob_counts(5, 96) == 25  # 5 * ceil(ln 96) = 5 * 5
    assert prob_counts(1, 1) == 1  # ln 1 = 0 would sample no key at all
    assert prob_counts(1, 2) == 1
    assert prob_counts(5, 3) == 3
    assert prob_counts(1, 6144) == 9


@pytest.mark.parametrize("seq_len", [1, 2, 3])
@pytest.mark.parametrize("attn", ["prob", "full"])
def test_shortest_windows_train_and_forecast(seq_len: int, attn: str) -> None:
    cfg = tiny(seq_len=seq_len, label_len=0, pred_len=1, factor=1, attn=attn, revin=True)
    model = build_model(cfg)
    inputs = batch(cfg, size=2)
    before = [p.detach().clone() for p in model.parameters()]

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = model(*inputs).pow(2).mean()
    loss.backward()
    optimizer.step()

    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert sum(changed) > len(changed) // 2
    model.eval()
    assert model(*inputs).shape == (2, 1, 1)


# ---------------------------------------------------------------- determinism


def test_eval_forecast_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    cfg = tiny(seq_len=48, label_len=24, factor=1)  # sampled keys well below L
    model = build_model(cfg).eval()
    inputs = batch(cfg)

    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = model(*inputs)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(12345)
    assert torch.equal(model(*inputs), first)


def test_eval_forecast_does_not_depend_on_the_rest_of_the_batch() -> None:
    cfg = tiny(seq_len=48, label_len=24, factor=1)
    model = build_model(cfg).eval()
    inputs = batch(cfg, size=5)
    together = model(*inputs)
    for i in (0, 3):
        alone = model(*(t[i:i + 1] for t in inputs))
        torch.testing.assert_close(alone, together[i:i + 1], atol=1e-5, rtol=0)


def test_training_samples_keys_from_the_global_rng() -> None:
    attention = ProbAttention(factor=1).train()
    q, k, v = torch.randn(3, 2, 64, 2, 4).unbind(0)
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append(attention(q, k, v))
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])


# ---------------------------------------------------------------- distilling


@pytest.mark.parametrize(("length", "halved"), [(96, 48), (95, 48), (7, 4), (2, 1), (1, 1)])
def test_distil_halves_exactly(length: int, halved: int) -> None:
    assert DistilLayer(8)(torch.randn(2, length, 8)).shape == (2, halved, 8)


def test_encoder_distils_between_layers_only() -> None:
    model = build_model(tiny(seq_len=96, e_layers=3))
    x = torch.randn(2, 96, 16)
    assert model.encoder(x).shape == (2, 24, 16)  # two distils: 96 -> 48 -> 24
    no_distil = build_model(tiny(seq_len=96, e_layers=3, distil=False))
    assert no_distil.encoder(x).shape == (2, 96, 16)


# ---------------------------------------------------------------- attention exactness


def reference_attention(q, k, v, causal: bool) -> torch.Tensor:
    """Textbook softmax attention written directly in the (B, L, H, D) layout."""
    scores = torch.einsum("blhd,bshd->bhls", q, k) / math.sqrt(q.shape[-1])
    if causal:
        L, S = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf"))
    return torch.einsum("bhls,bshd->blhd", scores.softmax(-1), v)


def leaf_inputs(L: int, S: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, L, 3, 4), (2, S, 3, 4), (2, S, 3, 4)]
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


@pytest.mark.parametrize(("causal", "L", "S"), [(False, 8, 8), (True, 8, 8), (False, 5, 9)])
def test_probsparse_with_every_query_active_equals_full_attention(causal, L, S) -> None:
    prob = ProbAttention(factor=10, causal=causal)  # u = 10 * ceil(ln L) >= L
    assert prob_counts(10, L) == L
    full = FullAttention(causal=causal)
    results = []
    for attention in (prob, full, None):
        q, k, v = leaf_inputs(L, S)
        out = reference_attention(q, k, v, causal) if attention is None else attention(q, k, v)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append((out.detach(), q.grad, k.grad, v.grad))
    for prob_t, full_t, ref_t in zip(*results, strict=True):
        torch.testing.assert_close(prob_t, ref_t, atol=1e-5, rtol=0)
        torch.testing.assert_close(full_t, ref_t, atol=1e-5, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_lazy_queries_take_the_mean_or_cumsum_of_values(causal: bool) -> None:
    q, k, v = (t.detach() for t in leaf_inputs(64, 64))
    out = ProbAttention(factor=1, causal=causal).eval()(q, k, v)  # u = ceil(ln 64) = 5
    full = reference_attention(q, k, v, causal)
    lazy = v.cumsum(dim=1) if causal else v.mean(dim=1, keepdim=True).expand_as(v)

    # Under the mask, query 0 sees only key 0, so its full and lazy outputs coincide: skip it.
    first = 1 if causal else 0
    is_full = ((out - full).abs().amax(-1) < 1e-9)[:, first:]  # (B, L, H)
    is_lazy = ((out - lazy).abs().amax(-1) < 1e-9)[:, first:]
    assert (is_full ^ is_lazy).all()
    n_active = is_full.sum(dim=1)  # five per item and head (one may be the skipped query 0)
    assert ((n_active <= 5) & (n_active >= 5 - first)).all()


def test_active_queries_are_the_top_max_mean_ones_when_all_keys_are_sampled() -> None:
    q, k, v = (t.detach() for t in leaf_inputs(40, 6))
    out = ProbAttention(factor=3).eval()(q, k, v)  # U = 3 * ceil(ln 6) = 6 = S, u = 12
    scores = torch.einsum("blhd,bshd->blhs", q, k) / 2.0
    measure = scores.amax(-1) - scores.mean(-1)  # (B, L, H)
    expected = torch.zeros_like(measure, dtype=torch.bool).scatter(
        1, measure.topk(12, dim=1).indices, True
    )
    is_full = (out - reference_attention(q, k, v, False)).abs().amax(-1) < 1e-9
    assert torch.equal(is_full, expected)


def test_eval_ranks_queries_on_one_seeded_sample_of_distinct_keys() -> None:
    q, k, v = (t.detach() for t in leaf_inputs(64, 64))
    prob = ProbAttention(factor=2, seed=7).eval()  # U = u = 2 * ceil(ln 64) = 10
    out = prob(q, k, v)
    keys = torch.randperm(64, generator=torch.Generator().manual_seed(7))[:10]
    scores = torch.einsum("blhd,bshd->blhs", q, k[:, keys]) / 2.0
    measure = scores.amax(-1) - scores.mean(-1)  # (B, L, H)
    expected = torch.zeros_like(measure, dtype=torch.bool).scatter(
        1, measure.topk(10, dim=1).indices, True
    )
    is_full = (out - reference_attention(q, k, v, False)).abs().amax(-1) < 1e-9
    assert torch.equal(is_full, expected)


def test_attention_layer_matches_torch_multihead_attention() -> None:
    torch.manual_seed(0)
    ours = AttentionLayer(FullAttention(), d_model=8, n_heads=2)
    theirs = nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight,
                                               ours.v_proj.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias,
                                             ours.v_proj.bias]))
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    x, memory = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    torch.testing.assert_close(ours(x, memory, memory), theirs(x, memory, memory)[0])


def test_mix_is_an_explicit_reading_of_the_head_major_layout() -> None:
    torch.manual_seed(0)
    plain = AttentionLayer(FullAttention(causal=True), d_model=8, n_heads=2)
    mixed = AttentionLayer(FullAttention(causal=True), d_model=8, n_heads=2, mix=True)
    mixed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 8)
    heads = FullAttention(causal=True)(*(
        proj(x).view(1, 3, 2, 4) for proj in (plain.q_proj, plain.k_proj, plain.v_proj)
    ))  # (B, L, H, D)
    expected = plain.out_proj(heads.transpose(1, 2).reshape(1, 3, 8))
    torch.testing.assert_close(mixed(x, x, x), expected)
    assert not torch.allclose(mixed(x, x, x), plain(x, x, x))


# ---------------------------------------------------------------- embeddings and state


def test_positional_tables_are_not_saved() -> None:
    keys = build_model(tiny(embed="fixed")).state_dict().keys()
    assert not [key for key in keys if "position" in key or "table" in key]
    learned = build_model(tiny(embed="learned")).state_dict().keys()
    assert "enc_embedding.temporal.tables.0.weight" in learned


def test_state_dict_round_trip_gives_the_same_forecast() -> None:
    cfg = tiny(revin=True)
    source, target = build_model(cfg).eval(), build_model(cfg).eval()
    target.load_state_dict(source.state_dict())
    inputs = batch(cfg)
    assert torch.equal(source(*inputs), target(*inputs))


def test_calendar_indices_out_of_range_are_refused() -> None:
    cfg = tiny(embed="learned")
    x_enc, x_mark_enc, x_dec, x_mark_dec = batch(cfg)
    x_mark_enc = x_mark_enc.clone()
    x_mark_enc[0, 0, 0] = 13  # month tables hold 1..12
    with pytest.raises(DataError, match=r"column 0 \(month\) holds values 0..13 outside 0..12"):
        build_model(cfg)(x_enc, x_mark_enc, x_dec, x_mark_dec)


# ---------------------------------------------------------------- RevIN


def test_revin_makes_the_forecast_follow_the_target_scale() -> None:
    cfg = tiny(revin=True)
    model = build_model(cfg).eval()
    x_enc, x_mark_enc, x_dec, x_mark_dec = batch(cfg)
    base = model(x_enc, x_mark_enc, x_dec, x_mark_dec)
    known = torch.arange(x_dec.shape[1]).view(1, -1, 1) < cfg.label_len
    scaled = model(x_enc * 50 + 7, x_mark_enc, torch.where(known, x_dec * 50 + 7, 0.0), x_mark_dec)
    torch.testing.assert_close(scaled, base * 50 + 7, atol=1e-2, rtol=1e-3)


def test_revin_denormalises_with_the_last_channel_in_ms_mode() -> None:
    cfg = tiny(revin=True, enc_in=3, dec_in=3, c_out=1)
    model = build_model(cfg).eval()
    x_enc, x_mark_enc, x_dec, x_mark_dec = batch(cfg)
    base = model(x_enc, x_mark_enc, x_dec, x_mark_dec)

    def rescale(channel: int) -> tuple[torch.Tensor, ...]:
        """Inputs with one channel's known values mapped x -> 20 x - 3 (placeholders stay 0)."""
        enc, dec = x_enc.clone(), x_dec.clone()
        enc[..., channel] = enc[..., channel] * 20 - 3
        dec[:, :cfg.label_len, channel] = dec[:, :cfg.label_len, channel] * 20 - 3
        return enc, x_mark_enc, dec, x_mark_dec

    torch.testing.assert_close(model(*rescale(2)), base * 20 - 3, atol=1e-2, rtol=1e-3)
    torch.testing.assert_close(model(*rescale(0)), base, atol=1e-3, rtol=1e-3)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"d_model": 10, "n_heads": 4}, r"d_model \(10\) must be divisible by n_heads \(4\)"),
        ({"attn": "sparse"}, r"model.attn must be one of prob, full; got 'sparse'"),
        ({"label_len": 20}, r"label_len \(20\) must be in 0..seq_len \(16\)"),
        ({"stack": ()}, r"model.stack must list encoder depths of 1 or more, got \(\)"),
        ({"revin": True, "enc_in": 1, "c_out": 2, "dec_in": 1}, r"revin needs c_out \(2\)"),
        ({"freq": "fortnight"}, r"model.freq 'fortnight' is not a pandas frequency alias"),
    ],
)
def test_invalid_config_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model(tiny(**changes))


def test_invalid_config_lists_every_problem() -> None:
    with pytest.raises(ConfigError, match=r"(?s)factor must be 1 or more.*one of gelu, relu"):
        build_model(tiny(factor=0, activation="tanh"))


def test_wrong_input_shapes_are_named() -> None:
    cfg = tiny()
    x_enc, x_mark_enc, x_dec, x_mark_dec = batch(cfg)
    with pytest.raises(DataError, match=r"x_enc has shape \(3, 15, 1\), expected \(3, 16, 1\)"):
        build_model(cfg)(x_enc[:, 1:], x_mark_enc, x_dec, x_mark_dec)
