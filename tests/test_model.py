"""The denoiser and the criterion, built directly from a small dictionary."""
import argparse

import pytest
import torch
from fairseq.data import Dictionary

from diffusion_plugin.criterions.diffusion_loss import DiffusionLoss, DiffusionLossConfig
from diffusion_plugin.models.diffusion_transformer import (
    ARCHITECTURES,
    LENGTH_OFFSETS,
    DiffusionTransformerConfig,
    DiffusionTransformerModel,
)
from diffusion_plugin.models.base import fill_config
from diffusion_plugin.models.packed_linear import can_pack


def make_dict(words=20) -> Dictionary:
    d = Dictionary()
    for i in range(words):
        d.add_symbol(f"w{i}")
    return d


def make_model(**overrides) -> DiffusionTransformerModel:
    settings = dict(
        encoder_layers=1, decoder_layers=1, model_dim=32, ffn_dim=64, attention_heads=2,
        latent_dim=8, diffusion_steps=50, dropout=0.0, rescaling_factor="1",
    )
    args = argparse.Namespace(**{**settings, **overrides})
    fill_config(DiffusionTransformerConfig, {}, args)
    dictionary = make_dict()
    return DiffusionTransformerModel(args, dictionary, dictionary)


def batch(model, lengths=(5, 3), target_lengths=(4, 2)):
    def tokens(ls):
        out = torch.full((len(ls), max(ls)), model.pad)
        for i, n in enumerate(ls):
            out[i, : n - 1] = torch.randint(4, 20, (n - 1,))
            out[i, n - 1] = model.eos
        return out

    return tokens(lengths), torch.tensor(lengths), tokens(target_lengths)


def test_architecture_defaults_and_command_line_precedence():
    args = argparse.Namespace(model_dim=64, self_cond=False)
    fill_config(DiffusionTransformerConfig, ARCHITECTURES["difformer_iwslt_de_en"], args)
    assert args.model_dim == 64 and args.self_cond is False  # command line wins
    assert args.ffn_dim == 1024 and args.attention_heads == 4 and args.rescaling_factor == "4"
    assert args.latent_dim == 128 and args.diffusion_steps == 2000 and args.embed_norm is True
    assert args.noise_schedule == DiffusionTransformerConfig.noise_schedule


def test_forward_shapes_and_length_offset_targets():
    torch.manual_seed(0)
    model = make_model()
    src, src_lengths, tgt = batch(model)
    out = model(src, src_lengths, tgt, torch.tensor([3, 50]))
    assert out["z0"].shape == out["z0_hat"].shape == (2, 4, 8)
    # EOS is not diffused: lengths 3 and 1, source lengths (with EOS) 5 and 3
    assert out["mask"].sum(1).tolist() == [3, 1]
    assert out["length_logits"].shape == (2, LENGTH_OFFSETS)
    assert out["length_target"].tolist() == [3 - 5 + 128, 1 - 3 + 128]
    assert model.logits(out["z0_hat"]).shape == (2, 4, 20 + 4)


def test_diffused_bos_eos_targets_and_length_classes():
    torch.manual_seed(0)
    model = make_model(diffuse_bos_eos=True)
    src, src_lengths, tgt = batch(model)  # targets of 3 and 1 tokens (then EOS), sources 5 and 3
    out = model(src, src_lengths, tgt, torch.tensor([3, 50]))
    bos, eos, pad = model.bos, model.eos, model.pad
    assert out["target"].tolist() == [[bos, *tgt[0, :3].tolist(), eos], [bos, int(tgt[1, 0]), eos, pad, pad]]
    assert out["mask"].sum(1).tolist() == [5, 3]
    assert out["length_target"].tolist() == [5 - 5 + 128, 3 - 3 + 128]
    # fairseq keeps targets (with EOS) of at most max − 1 tokens: BOS takes the last position
    assert make_model(diffuse_bos_eos=True, max_target_positions=6).max_positions() == (1024, 5)
    assert make_model(max_target_positions=6).max_positions() == (1024, 6)
    # decoding counts tokens: the predictor's class (diffused length) less BOS and EOS
    with torch.no_grad():
        model.length_head.weight.zero_()
        model.length_head.bias.zero_()
        model.length_head.bias[LENGTH_OFFSETS // 2 + 2] = 1.0  # diffused length = source + 2
    enc = model.encode(src)
    assert model.predict_lengths(enc, beam=1).tolist() == [[5], [3]]
    lprobs = torch.log_softmax(model.length_logits(enc), dim=-1)
    torch.testing.assert_close(model.length_log_probs(enc, torch.tensor([[5], [3]])), lprobs[:, 130:131])


def test_self_conditioning_input_width_and_effect():
    torch.manual_seed(0)
    model = make_model(self_cond=True).eval()
    assert model.decoder_in.in_features == 16
    src, _, tgt = batch(model)
    enc = model.encode(src)
    z = torch.randn(2, 4, 8)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    t = torch.tensor([10, 10])
    plain = model.denoise(z, t, enc, mask)
    torch.testing.assert_close(plain, model.denoise(z, t, enc, mask, torch.zeros_like(z)))
    assert not torch.allclose(plain, model.denoise(z, t, enc, mask, torch.randn_like(z)))
    no_cond = make_model(self_cond=False).eval()
    assert no_cond.decoder_in.in_features == 8
    torch.testing.assert_close(
        no_cond.denoise(z, t, no_cond.encode(src), mask),
        no_cond.denoise(z, t, no_cond.encode(src), mask, torch.randn_like(z)),
    )


def test_predicted_lengths_are_clamped():
    model = make_model(max_target_positions=6).eval()
    src, _, _ = batch(model)
    enc = model.encode(src)
    with torch.no_grad():
        model.length_head.bias.zero_()
        model.length_head.weight.zero_()
        model.length_head.bias[LENGTH_OFFSETS - 1] = 10.0  # offset +127
        model.length_head.bias[0] = 5.0  # offset −128
    lengths = model.predict_lengths(enc, beam=2)
    assert lengths.tolist() == [[6, 1], [6, 1]]


def test_padding_does_not_change_predictions():
    torch.manual_seed(0)
    model = make_model().eval()
    src, _, _ = batch(model, lengths=(5, 5))
    enc = model.encode(src)
    z, t = torch.randn(1, 3, 8), torch.tensor([20])
    short = model.denoise(z, t, {k: v[:1] for k, v in enc.items()}, torch.zeros(1, 3, dtype=torch.bool))
    padded_z = torch.cat([z, torch.randn(1, 2, 8)], dim=1)
    padded_mask = torch.tensor([[False, False, False, True, True]])
    padded = model.denoise(padded_z, t, {k: v[:1] for k, v in enc.items()}, padded_mask)
    torch.testing.assert_close(padded[:, :3], short, atol=1e-5, rtol=1e-5)


class FakeTask:
    def __init__(self, dictionary):
        self.source_dictionary = self.target_dictionary = dictionary


def criterion_terms(model, **cfg):
    criterion = DiffusionLoss(DiffusionLossConfig(**cfg), FakeTask(make_dict()))
    src, src_lengths, tgt = batch(model)
    sample = {
        "net_input": {"src_tokens": src, "src_lengths": src_lengths},
        "target": tgt,
        "ntokens": int(tgt.ne(model.pad).sum()),
    }
    torch.manual_seed(0)
    loss, sample_size, log = criterion(model, sample)
    return loss, sample_size, log


def test_criterion_terms_are_logged_and_summed():
    model = make_model()
    loss, sample_size, log = criterion_terms(model, length_loss_factor=0.1)
    assert sample_size == 1
    assert {"mse", "anchor", "length", "nll_loss"} <= set(log) and "rounding" not in log
    assert loss.item() == pytest.approx((log["mse"] + log["anchor"] + 0.1 * log["length"]).item(), rel=1e-6)
    _, _, log = criterion_terms(model, rounding_loss=True, prior_loss=True)
    assert "rounding" in log and "anchor" not in log and log["prior"] > 0


def test_encoder_is_invariant_to_left_padding():
    """fairseq left-pads sources: positions count from the first real token."""
    torch.manual_seed(0)
    model = make_model().eval()
    sentence = torch.tensor([[7, 8, 9, model.eos]])
    padded = torch.cat([torch.full((1, 3), model.pad), sentence], dim=1)
    short, long = model.encode(sentence), model.encode(padded)
    torch.testing.assert_close(long["out"][:, 3:], short["out"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.length_logits(long), model.length_logits(short), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "activation, padded, post_norm", [("relu", True, False), ("gelu", True, False), ("relu", False, False), ("gelu", True, True)]
)
def test_cached_cross_attention_decoding_equals_the_module_forward(activation, padded, post_norm):
    """decoding_state's cached keys/values, shared by 3 candidates per source as one query
    sequence, give the nn.TransformerDecoder result of the repeated encoder states (with padded
    sources and candidates, and without any padding: attention without masks; pre- and
    post-norm layers)."""
    torch.manual_seed(0)
    model = make_model(decoder_layers=2, activation_fn=activation, self_cond=True, post_norm=post_norm).eval()
    assert (model.decoder.norm is None) == post_norm and model.decoder.layers[0].norm_first != post_norm
    src, _, _ = batch(model, lengths=(6, 3) if padded else (6, 6))  # (6, 3): the second is padded
    enc = model.encode(src)
    assert bool(enc["padding_mask"].any()) == padded
    z = torch.randn(6, 5, 8)
    mask = torch.zeros(6, 5, dtype=torch.bool)
    if padded:
        mask[1, 3:] = mask[4, 1:] = True  # candidates of different lengths
    t, prev = torch.tensor([20]), torch.randn(6, 5, 8)
    with torch.no_grad():
        state = model.decoding_state(enc, per_source=3)
    assert set(state) == {"padding_mask", "memory_keep", "cross_attention", "weights"}
    assert (state["memory_keep"] is None) == (not padded)  # no source padding: attention unmasked
    assert state["cross_attention"][0][0].shape == (2, 2, 6, 16)  # [B, H, S, d_h]: once per source
    assert state["weights"].decoder[0].ffn_in.packed == can_pack(model.decoder_in.weight)
    repeated = {k: v.repeat_interleave(3, dim=0) for k, v in enc.items()}
    with torch.no_grad():
        expected = model.denoise(z, t, repeated, mask, prev)
        cached = model.denoise(z, t, state, mask, prev)
    real = ~mask
    torch.testing.assert_close(cached[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "activation, lengths, post_norm", [("relu", (6, 3), False), ("gelu", (6, 3), False), ("relu", (4, 4), False), ("relu", (6, 3), True)]
)
def test_packed_encoder_equals_the_module_forward(activation, lengths, post_norm):
    """Decoding (eval, no grad) encodes with the packed linear maps: same states as
    nn.TransformerEncoder at the real positions (also without padding: no attention mask;
    pre- and post-norm layers)."""
    torch.manual_seed(0)
    model = make_model(encoder_layers=2, activation_fn=activation, post_norm=post_norm).eval()
    assert (model.encoder.norm is None) == post_norm
    src, _, _ = batch(model, lengths=lengths)
    with torch.no_grad():
        packed = model.encode(src)
    expected = model.encode(src)  # gradients on: the module forward
    assert expected["out"].requires_grad and not packed["out"].requires_grad
    real = ~packed["padding_mask"]
    torch.testing.assert_close(packed["out"][real], expected["out"][real], atol=1e-5, rtol=1e-5)


def test_decoding_caches_follow_parameter_changes():
    """Eval + no_grad reads e(t), the normalised E and the packed linear maps from caches; they
    equal the direct
    computation and follow every way the parameters change (load_state_dict, an optimiser's
    in-place p.data update followed by train(), a dtype change)."""
    model = make_model(embed_norm=True).eval()
    time_embed, embed = model.time_embed, model.embed
    t = torch.tensor([0, 7, 50])
    tokens = torch.tensor([[4, 5, model.pad]])

    def check():
        with torch.no_grad():
            expected_e = time_embed.embed(t)
            expected_rows = torch.nn.functional.layer_norm(embed.weight, (8,))
            assert torch.allclose(time_embed(t), expected_e, atol=1e-6)
            assert torch.allclose(embed.table(), expected_rows)
            assert torch.allclose(embed(tokens), expected_rows[tokens])
            assert embed.table() is embed.table()  # cached, not recomputed
            weights = model.decoding_weights()  # packed for oneDNN on a CPU
            assert weights is model.decoding_weights()
            layer = model.decoder.layers[0]
            x = torch.randn(3, layer.linear1.in_features, dtype=layer.linear1.weight.dtype)
            expected_ffn = layer.activation(layer.linear1(x))  # the activation is fused into ffn_in
            assert torch.allclose(weights.decoder[0].ffn_in(x), expected_ffn, atol=1e-5)

    check()
    state = {k: v + 0.5 for k, v in model.state_dict().items()}
    model.load_state_dict(state)  # param.copy_: bumps _version
    check()
    model.train()
    for p in model.parameters():  # what fairseq's Adam does (no _version bump)
        p.data.mul_(2.0)
    model.eval()
    check()
    model.double()
    check()
    assert embed.table().dtype == torch.float64


def test_embedding_normalises_only_the_looked_up_rows_with_the_same_gradient():
    model = make_model(embed_norm=True).train()
    tokens = torch.tensor([[4, 5, 6, model.pad]])
    weights = torch.randn(1, 4, 8)
    (model.embed(tokens) * weights).sum().backward()
    grad = model.embed.weight.grad.clone()
    model.embed.weight.grad = None
    reference = torch.nn.functional.layer_norm(model.embed.weight, (8,))
    (torch.nn.functional.embedding(tokens, reference, model.pad) * weights).sum().backward()
    assert torch.allclose(grad, model.embed.weight.grad, atol=1e-6)
    assert grad[7:].abs().sum() == 0 and grad[model.pad].abs().sum() == 0
    assert grad[4].abs().sum() > 1e-3


def test_affine_embedding_norm_learns_a_scale_and_shift():
    """--embed-norm-affine: γ ⊙ LN(e) + β, equal to the plain norm at initialisation (γ = 1, β = 0),
    with gradients into γ and β; a changed γ, β reaches the cached decoding table; refused
    without --embed-norm."""
    torch.manual_seed(0)
    plain = make_model(embed_norm=True)
    torch.manual_seed(0)
    model = make_model(embed_norm=True, embed_norm_affine=True)
    assert plain.embed.norm_scale is None and plain.embed.norm_shift is None
    assert torch.equal(model.embed.weight, plain.embed.weight)
    tokens = torch.tensor([[4, 5, 6]])
    assert torch.allclose(model.embed(tokens), plain.embed(tokens))
    (model.embed(tokens) * torch.randn(1, 3, 8)).sum().backward()
    assert model.embed.norm_scale.grad.abs().sum() > 0 and model.embed.norm_shift.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        model.embed.norm_scale.fill_(2.0)
        model.embed.norm_shift.fill_(0.5)
        expected = 2.0 * torch.nn.functional.layer_norm(model.embed.weight, (8,)) + 0.5
        assert torch.allclose(model.embed.table(), expected, atol=1e-6)
        assert torch.allclose(model.embed.logits(torch.ones(1, 8)), torch.ones(1, 8) @ expected.t(), atol=1e-5)
    with pytest.raises(ValueError, match="--embed-norm-affine needs --embed-norm"):
        make_model(embed_norm=False, embed_norm_affine=True)


def test_attention_dropout_is_applied_to_every_attention():
    """--attention-dropout sets the attention-weight dropout; -1 (default) keeps --dropout there."""
    attentions = lambda m: [a.dropout for a in m.modules() if isinstance(a, torch.nn.MultiheadAttention)]  # noqa: E731
    torch.manual_seed(0)
    assert set(attentions(make_model(dropout=0.3))) == {0.3}
    rates = attentions(make_model(dropout=0.3, attention_dropout=0.0))
    assert len(rates) == 3 and set(rates) == {0.0}  # encoder self, decoder self and cross
    with pytest.raises(ValueError, match=r"--attention-dropout must be in \[0, 1\) or -1 \(= --dropout\), got 1.5"):
        make_model(attention_dropout=1.5)


def test_input_norm_makes_the_denoiser_blind_to_the_scale_of_z_t():
    """--input-norm: ẑ_0 of c·z_t equals ẑ_0 of z_t for any c > 0 (per position), which it does
    not without the flag; in training and in decoding alike."""
    torch.manual_seed(0)
    src, _, _ = batch(make_model())
    z, t = torch.randn(2, 4, 8), torch.tensor([10, 40])
    mask = torch.zeros(2, 4, dtype=torch.bool)
    scale = torch.tensor([3.0, 0.5, 1.7, 4.5]).view(1, 4, 1)
    for flag in (True, False):
        model = make_model(input_norm=flag, self_cond=True).eval()
        enc = model.encode(src)
        same = torch.allclose(model.denoise(z * scale, t, enc, mask), model.denoise(z, t, enc, mask), atol=1e-5)
        assert same == flag
    with torch.no_grad():  # decoding's fast path
        state = model.decoding_state(model.encode(src), per_source=1)
        fast = model.denoise(z * scale, t, state, mask)
    assert not torch.allclose(fast, model.denoise(z, t, enc, mask).detach(), atol=1e-5)
    model = make_model(input_norm=True, self_cond=True).eval()
    with torch.no_grad():
        state = model.decoding_state(model.encode(src), per_source=1)
        fast = model.denoise(z * scale, t, state, mask)
    torch.testing.assert_close(fast, model.denoise(z, t, model.encode(src), mask).detach(), atol=1e-5, rtol=1e-5)


def test_learned_positions_have_their_own_tables_and_refuse_longer_inputs():
    """--learned-positions: separate source and target tables of --max-*-positions rows,
    N(0, 0.02); a sequence longer than its table is refused by name."""
    torch.manual_seed(0)
    model = make_model(learned_positions=True, max_source_positions=8, max_target_positions=6)
    assert model.positions.weight.shape == (8, 32) and model.target_positions.weight.shape == (6, 32)
    assert abs(model.positions.weight.std().item() - 0.02) < 0.005
    sinusoidal = make_model()
    assert sinusoidal.target_positions is sinusoidal.positions and not list(sinusoidal.positions.parameters())
    src, src_lengths, tgt = batch(model, lengths=(6, 3), target_lengths=(6, 2))
    model(src, src_lengths, tgt, torch.tensor([3, 7]))  # 5 target positions: within the table
    with pytest.raises(ValueError, match="9 positions exceed the 8 learned position embeddings"):
        model.encode(torch.randint(4, 20, (1, 9)))


def test_bert_init_draws_linear_maps_from_n_0_002_and_keeps_the_latent_table():
    torch.manual_seed(0)
    model = make_model(bert_init=True, model_dim=64, ffn_dim=128)
    assert abs(model.encoder.layers[0].linear1.weight.std().item() - 0.02) < 0.003
    assert abs(model.decoder.layers[0].self_attn.in_proj_weight.std().item() - 0.02) < 0.003
    assert float(model.decoder_out.bias.abs().max()) == 0.0
    assert abs(model.embed.weight[4:].std().item() - 1.0) < 0.1  # σ_e = 1: the degeneration score's premise
    default = make_model(model_dim=64, ffn_dim=128)
    assert default.encoder.layers[0].linear1.weight.std().item() > 0.05
