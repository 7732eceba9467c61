"""DiffuSeq: partial noising, anchoring, target-only loss, length from padding, bad input, CLI."""
import argparse
import logging
import re

import pytest
import torch

from conftest import PLUGIN_DIR, generate_args, run_fairseq
from diffusion_plugin.criterions.diffusion_loss import DiffusionLoss, DiffusionLossConfig
from diffusion_plugin.generator import DECODING_FIELDS, DecodingConfig, DiffusionGenerator
from diffusion_plugin.models.base import fill_config
from diffusion_plugin.models.diffuseq import ARCHITECTURES, DiffuSeqConfig, DiffuSeqModel
from test_model import make_dict

T = 50


def make_model(**overrides) -> DiffuSeqModel:
    settings = dict(
        layers=1, model_dim=32, ffn_dim=64, attention_heads=2, latent_dim=8, diffusion_steps=T,
        dropout=0.0, max_positions=12, max_target_positions=6,
    )
    args = argparse.Namespace(**{**settings, **overrides})
    fill_config(DiffuSeqConfig, {}, args)
    return DiffuSeqModel(args, make_dict(), make_dict())


def tokens(model, lengths, left_pad):
    out = torch.full((len(lengths), max(lengths)), model.pad)
    for i, n in enumerate(lengths):
        row = torch.cat([torch.randint(4, 20, (n - 1,)), torch.tensor([model.eos])])
        if left_pad:
            out[i, out.size(1) - n :] = row
        else:
            out[i, :n] = row
    return out


def batch(model, src_lengths=(5, 3), tgt_lengths=(4, 2)):
    return (
        tokens(model, src_lengths, left_pad=True),
        torch.tensor(src_lengths),
        tokens(model, tgt_lengths, left_pad=False),
    )


def capture_inputs(module):
    """Record the inputs of ``module`` (the full sequence [x-part ; y-part] for ``proj_in``)."""
    seen = []
    module.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    return seen


def capture_decoding_inputs(model):
    """Record the inputs of the packed ``proj_in`` decoding applies (``decoding_weights``)."""
    seen = []
    pack_weights = model.pack_weights

    def recording(pack):
        weights = pack_weights(pack)
        return weights._replace(proj_in=lambda x: seen.append(x.clone()) or weights.proj_in(x))

    model.pack_weights = recording
    return seen


def generator(model, **decoding):
    cfg = {name: getattr(DecodingConfig, name) for name in DECODING_FIELDS}
    cfg.update(decoding_steps=5, **decoding)
    return DiffusionGenerator([model], make_dict(), **cfg)


def test_architectures():
    args = argparse.Namespace()
    fill_config(DiffuSeqConfig, ARCHITECTURES["diffuseq_base"], args)
    assert (args.layers, args.attention_heads, args.model_dim, args.latent_dim) == (12, 12, 768, 128)
    assert (args.diffusion_steps, str(args.noise_schedule), args.max_positions) == (2000, "sqrt", 128)


def test_partial_noising_leaves_the_source_part_bit_identical():
    torch.manual_seed(0)
    model = make_model()
    src, src_lengths, tgt = batch(model)
    seen = capture_inputs(model.proj_in)
    out = model(src, src_lengths, tgt, torch.tensor([T, T]))
    z_t = seen[0]
    S = src.size(1)
    assert torch.equal(z_t[:, :S], model.embed(src))  # x part: clean E(x), bit for bit
    assert not torch.allclose(z_t[:, S:], out["z0"], atol=0.1)  # y part: noised
    # target part: budget L = min(6, 12 − m) = 6 for both rows; y then padding, all scored
    assert out["mask"].tolist() == [[True] * 6] * 2
    assert out["target"][0, 3:].eq(model.pad).all() and out["target"][0, :3].ne(model.pad).all()
    assert "length_logits" not in out


def test_target_budget_follows_the_source_length():
    model = make_model(max_positions=8)
    src, src_lengths, tgt = batch(model, src_lengths=(5, 3), tgt_lengths=(2, 2))
    out = model(src, src_lengths, tgt, torch.tensor([1, 1]))
    # L = min(6, 8 − m): 3 for m = 5, 5 for m = 3
    assert out["mask"].sum(1).tolist() == [3, 5]
    assert model.predict_lengths(model.encode(src), 2).tolist() == [[3, 3], [5, 5]]


def test_anchoring_resets_the_source_part_at_every_reverse_step():
    torch.manual_seed(0)
    model = make_model().eval()
    src, _, _ = batch(model)
    seen = capture_decoding_inputs(model)
    generator(model, noise_beam=2).generate([model], {"net_input": {"src_tokens": src}})
    assert len(seen) == 5
    anchor = model.embed(src).repeat_interleave(2, dim=0)
    S = src.size(1)
    for before, after in zip(seen, seen[1:]):
        assert torch.equal(after[:, :S], anchor)
        assert not torch.equal(after[:, S:], before[:, S:])  # the target part moves
    assert torch.equal(seen[0][:, :S], anchor)


@pytest.mark.parametrize(
    "activation, choices", [("relu", {}), ("gelu", {}), ("gelu", dict(post_norm=True, learned_positions=True, bert_init=True))]
)
def test_packed_decoding_step_equals_the_module_forward(activation, choices):
    """A reverse step through decoding_state (linear maps packed for oneDNN on a CPU) gives the
    nn.TransformerEncoder result at the real target positions (also with Difformer's post-norm
    layers, learned positions and BERT initialisation)."""
    torch.manual_seed(0)
    model = make_model(layers=2, activation_fn=activation, **choices).eval()
    assert (model.transformer.norm is None) == bool(choices)
    assert len(list(model.positions.parameters())) == (1 if choices else 0)
    src, _, _ = batch(model)
    z = torch.randn(4, 6, 8)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[1, 4:] = mask[3, 2:] = True
    t = torch.tensor([20])
    encoder_out = model.encode(src)
    with torch.no_grad():
        state = model.decoding_state(encoder_out, per_source=2)
        packed = model.denoise(z, t, state, mask)
    assert set(state) == {"x0", "padding_mask", "weights"}
    repeated = {k: v.repeat_interleave(2, dim=0) for k, v in encoder_out.items()}
    expected = model.denoise(z, t, repeated, mask)  # gradients on: the module forward
    torch.testing.assert_close(packed[~mask], expected[~mask].detach(), atol=1e-5, rtol=1e-5)


def test_loss_gradient_is_zero_at_source_positions():
    torch.manual_seed(0)
    model = make_model()
    src, src_lengths, tgt = batch(model)
    states = []

    def keep(_, __, output):
        output.retain_grad()
        states.append(output)

    model.transformer.register_forward_hook(keep)
    sample = {"net_input": {"src_tokens": src, "src_lengths": src_lengths}, "target": tgt, "ntokens": 6}
    criterion = DiffusionLoss(DiffusionLossConfig(rounding_loss=True, prior_loss=True), task=None)
    loss, _, log = criterion(model, sample)
    loss.backward()
    grad = states[0].grad
    S = src.size(1)
    assert grad[:, :S].abs().max().item() == 0.0
    assert grad[:, S:].abs().sum(-1).gt(0).all()  # every target-part position is scored
    assert "length" not in log and {"mse", "rounding", "prior"} <= set(log)


def test_outputs_stop_at_the_first_padding_token_and_uncut_ones_are_reported(caplog):
    torch.manual_seed(0)
    model = make_model().eval()
    src, _, _ = batch(model)
    gen = generator(model)
    fixed = torch.tensor([[7, 8, model.pad, 9, model.pad, 10], [11, 12, 13, 14, 15, 16]])
    gen.round = lambda z0_hat, padding_mask: (fixed, torch.zeros(fixed.shape))
    with caplog.at_level(logging.WARNING):
        hyps = gen.generate([model], {"net_input": {"src_tokens": src}})
    assert hyps[0][0]["tokens"].tolist() == [7, 8, model.eos]
    assert hyps[0][0]["cut_at_max_length"] is False
    assert hyps[1][0]["tokens"].tolist() == [11, 12, 13, 14, 15, 16, model.eos]
    assert hyps[1][0]["cut_at_max_length"] is True
    assert "1 of 2 candidates emitted no padding token" in caplog.text


def test_padding_is_a_generated_symbol():
    model = make_model()
    assert model.embed.weight[model.pad].abs().sum() > 0  # trained like any symbol
    gen = generator(model)
    logits = torch.full((1, 1, 24), -5.0)
    logits[..., model.pad] = 5.0
    gen.model.logits = lambda z: logits.clone()
    assert gen.round(torch.zeros(1, 1, 8), torch.zeros(1, 1, dtype=torch.bool))[0].item() == model.pad


def test_source_longer_than_the_budget_is_refused():
    model = make_model()
    src, src_lengths, tgt = batch(model, src_lengths=(12, 3))
    with pytest.raises(ValueError, match="leaves no target position within --max-positions 12"):
        model.encode(src)
    src, src_lengths, tgt = batch(model, src_lengths=(9, 3), tgt_lengths=(5, 2))
    with pytest.raises(ValueError, match=r"source \(9 tokens with EOS\) \+ target \(4 tokens\) exceed"):
        model(src, src_lengths, tgt, torch.tensor([1, 1]))


def test_separate_dictionaries_and_length_beam_are_refused():
    args = argparse.Namespace(layers=1, model_dim=32, ffn_dim=64, attention_heads=2, latent_dim=8)
    fill_config(DiffuSeqConfig, {}, args)
    with pytest.raises(ValueError, match="needs a joined dictionary"):
        DiffuSeqModel(args, make_dict(20), make_dict(21))
    with pytest.raises(ValueError, match="--length-beam 2: DiffuSeqModel has no length predictor"):
        generator(make_model(), length_beam=2)


def test_fairseq_train_and_generate(data_bin, tmp_path):
    run_fairseq(
        "train",
        [
            str(data_bin), "--user-dir", PLUGIN_DIR, "--cpu", "--seed", "1",
            "--task", "diffusion_translation", "--arch", "diffuseq_tiny", "--layers", "1",
            "--model-dim", "32", "--ffn-dim", "64", "--attention-heads", "2", "--latent-dim", "16",
            "--diffusion-steps", "100", "--max-positions", "48", "--max-target-positions", "24",
            "--criterion", "diffusion_loss", "--rounding-loss", "--optimizer", "adam", "--lr", "5e-3",
            "--max-tokens", "2000", "--max-update", "20", "--save-dir", str(tmp_path),
            "--no-epoch-checkpoints", "--log-format", "none", "--num-workers", "0",
        ],
    )
    out = run_fairseq(
        "generate",
        generate_args(
            data_bin, tmp_path / "checkpoint_last.pt", "--noise-beam", "3",
            "--candidate-selection", "bleu-mbr", "--retain-iter-history", "--decoding-sampler", "ddim",
        ),
    )
    assert sorted(int(i) for i in re.findall(r"^H-(\d+)\t", out, flags=re.M)) == list(range(30))
    assert len(re.findall(r"^E-0_\d+\t", out, flags=re.M)) == 5
    assert re.search(r"BLEU4? = \d+\.\d+", out)
