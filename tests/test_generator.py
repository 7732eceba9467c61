"""DiffusionGenerator around a tiny untrained model, with controlled denoiser / length / rounding."""
import logging
import math
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import torch
from torch import Tensor, nn

from diffusion_plugin.diffusion.noise import SentenceNoise
from diffusion_plugin.diffusion.samplers import respaced_timesteps, spaced_timesteps
from diffusion_plugin.diffusion.schedules import alphas_cumprod
from diffusion_plugin.diffusion.selection import add_one_sentence_bleu, mbr_utilities
from diffusion_plugin import generator as generator_module
from diffusion_plugin.generator import DECODING_FIELDS, DecodingConfig, DiffusionGenerator, check_decoding
from diffusion_plugin.models.diffusion_transformer import LENGTH_OFFSETS, DiffusionTransformerModel
from test_model import make_dict, make_model

BOS, PAD, EOS = 0, 1, 2
SPECIAL = [BOS, PAD, EOS]
T = 50  # make_model's --diffusion-steps
LATENT = 8  # make_model's --latent-dim
VOCAB = len(make_dict())


def decoding(**overrides: Any) -> Dict[str, Any]:
    """DecodingConfig defaults with ``overrides``."""
    defaults = DecodingConfig()
    return {**{name: getattr(defaults, name) for name in DECODING_FIELDS}, **overrides}


def generator(
    model: DiffusionTransformerModel, *extra: Any, retain_history: bool = False, **flags: Any
) -> DiffusionGenerator:
    """A generator of ``model`` (and ``extra`` models: the reranker) with decoding ``flags``."""
    return DiffusionGenerator([model, *extra], make_dict(), retain_history=retain_history, **decoding(**flags))


def sample(*sources: List[int]) -> Dict[str, Any]:
    """A batch of left-padded sources, each followed by EOS."""
    width = max(len(s) for s in sources) + 1
    tokens = torch.full((len(sources), width), PAD)
    for i, s in enumerate(sources):
        tokens[i, width - len(s) - 1 :] = torch.tensor(s + [EOS])
    return {"net_input": {"src_tokens": tokens, "src_lengths": torch.tensor([len(s) + 1 for s in sources])}}


SAMPLE = sample([5, 6, 7, 8, 9], [10, 11, 12])  # source lengths (with EOS) 6 and 4


@pytest.fixture
def model() -> DiffusionTransformerModel:
    torch.manual_seed(0)
    return make_model(self_cond=True).eval()


def record_denoise(monkeypatch, model: DiffusionTransformerModel) -> List[Dict[str, Optional[Tensor]]]:
    """Wrap ``model.denoise``: every call's inputs and output are appended to the returned list."""
    calls: List[Dict[str, Optional[Tensor]]] = []
    denoise = model.denoise

    def recorded(z_t, t, encoder_out, padding_mask, z0_prev=None):
        out = denoise(z_t, t, encoder_out, padding_mask, z0_prev)
        calls.append({"z_t": z_t.clone(), "t": t.clone(), "z0_prev": z0_prev, "out": out.clone(),
                      "padding_mask": padding_mask})
        return out

    monkeypatch.setattr(model, "denoise", recorded)
    return calls


def replace_noise(monkeypatch, replace: Callable[[int, Tensor], Tensor]) -> None:
    """Every generator's i-th Gaussian draw of a batch (i = 0: z_T, then one per stochastic
    step) is ``replace(i, the draw)``, the draws themselves coming from the sentences' seeded
    generators (``SentenceNoise``)."""

    class Replaced(SentenceNoise):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.draws = 0

        def normal(self, device: torch.device, dtype: torch.dtype) -> Tensor:
            out = replace(self.draws, super().normal(device, dtype))
            self.draws += 1
            return out

    monkeypatch.setattr(DiffusionGenerator, "noise_source", Replaced)


def fix_initial_noise(monkeypatch, z_T: Tensor) -> None:
    """The chain starts from ``z_T``; its later draws are the seeded generators' own."""

    def first(i: int, draw: Tensor) -> Tensor:
        if i:
            return draw
        assert draw.shape == z_T.shape
        return z_T.clone()

    replace_noise(monkeypatch, first)


def fix_rounding(
    monkeypatch, gen: DiffusionGenerator, candidates: List[List[int]], scores: List[float]
) -> None:
    """Rounding returns ``candidates`` (one row per candidate) with per-token log-prob ``scores``."""
    tokens = torch.tensor(candidates)
    lprobs = torch.tensor(scores).unsqueeze(1).expand(tokens.shape).clone()
    monkeypatch.setattr(gen, "round", lambda z0_hat, padding_mask: (tokens, lprobs))


def favour_offsets(model: DiffusionTransformerModel, offsets: List[int]) -> None:
    """Length head whose ranking of target − source offsets is ``offsets``, best first."""
    with torch.no_grad():
        model.length_head.weight.zero_()
        model.length_head.bias.zero_()
        for rank, offset in enumerate(offsets):
            model.length_head.bias[offset + LENGTH_OFFSETS // 2] = len(offsets) - rank


def outputs(hypotheses: List[List[Dict[str, Any]]]) -> List[Tuple[List[int], List[float]]]:
    return [(h["tokens"].tolist(), h["positional_scores"].tolist()) for hyps in hypotheses for h in hyps]


def lengths_of(hyps: List[Dict[str, Any]]) -> List[int]:
    """Candidate lengths without the EOS, sorted."""
    return sorted(h["tokens"].numel() - 1 for h in hyps)


# --- DDIM --------------------------------------------------------------------------------------


def test_ddim_eta0_chain_depends_only_on_the_initial_noise(monkeypatch, model):
    calls = record_denoise(monkeypatch, model)
    fix_initial_noise(monkeypatch, torch.randn(4, 5, LATENT, generator=torch.Generator().manual_seed(0)))

    def chain(seed: int, **flags: Any) -> Tuple[List[Tensor], List[Tuple[List[int], List[float]]]]:
        gen = generator(model, decoding_steps=8, target_length=5, noise_beam=2, **flags)
        calls.clear()
        torch.manual_seed(seed)
        hyps = gen.generate([model], SAMPLE)
        return [c["z_t"] for c in calls], outputs(hyps)

    (z_a, out_a), (z_b, out_b) = chain(1, decoding_sampler="ddim"), chain(2, decoding_sampler="ddim")
    assert len(z_a) == len(z_b) == 8
    assert all(torch.equal(a, b) for a, b in zip(z_a, z_b))
    assert out_a == out_b
    # the same fixed z_T with stochastic steps: the chains part after the first step
    (z_a, _), (z_b, _) = chain(1, decoding_sampler="ddpm"), chain(2, decoding_sampler="ddpm")
    assert torch.equal(z_a[0], z_b[0]) and not torch.allclose(z_a[1], z_b[1])


@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_ddim_with_every_step_matches_the_closed_form(monkeypatch, model, factor):
    """K = T, η = 0:  z_{t−1} = sqrt(ᾱ_{t−1}) ẑ_0 + σ_{t−1} (z_t − sqrt(ᾱ_t) ẑ_0) / σ_t
    with σ² = F²(1 − ᾱ) (decoding rescaling factor F)."""
    calls = record_denoise(monkeypatch, model)
    gen = generator(
        model, decoding_steps=T, decoding_sampler="ddim", target_length=4, decoding_rescaling_factor=factor
    )
    gen.generate([model], SAMPLE)
    assert [int(c["t"][0]) for c in calls] == list(range(T, 0, -1))
    alpha_bar = alphas_cumprod("sqrt", T)
    for k in (0, 17, T - 2):
        t, s = T - k, T - k - 1
        z_t, z0_hat = calls[k]["z_t"].double(), calls[k]["out"].double()
        sigma_t, sigma_s = factor * math.sqrt(1 - alpha_bar[t]), factor * math.sqrt(1 - alpha_bar[s])
        eps = (z_t - math.sqrt(alpha_bar[t]) * z0_hat) / sigma_t
        expected = math.sqrt(alpha_bar[s]) * z0_hat + sigma_s * eps
        torch.testing.assert_close(calls[k + 1]["z_t"].double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_dpm_solver_chain_follows_the_2m_update(monkeypatch, model, factor):
    """--decoding-sampler dpm-solver++ (order 2), K = 6: the first step is DDIM (η = 0), every
    later one z_s = (σ_s/σ_t) z_t − α_s (e^{−h} − 1)((1 + 1/(2r)) x̂_t − x̂_{t'}/(2r)) with
    λ = log(α/σ), h = λ_s − λ_t, r = h_{prev}/h (Lu et al. 2022), on the decoding schedule
    rescaled by F; order 1 is the DDIM chain itself."""
    calls = record_denoise(monkeypatch, model)
    flags = dict(decoding_steps=6, target_length=4, decoding_rescaling_factor=factor)
    generator(model, decoding_sampler="dpm-solver++", **flags).generate([model], SAMPLE)
    taus = respaced_timesteps(T, 6).tolist()
    assert [int(c["t"][0]) for c in calls] == taus[:6]
    alpha_bar = alphas_cumprod("sqrt", T)
    alpha = [math.sqrt(alpha_bar[t]) for t in taus]
    sigma = [factor * math.sqrt(1 - alpha_bar[t]) for t in taus]
    lam = [math.log(a / s) for a, s in zip(alpha[:-1], sigma[:-1])]  # τ_K = 0 (σ = 0) is never reached
    for k in range(5):
        z_t, x_t = calls[k]["z_t"].double(), calls[k]["out"].double()
        h = lam[k + 1] - lam[k]
        data = x_t
        if k > 0:
            r = (lam[k] - lam[k - 1]) / h
            data = (1 + 1 / (2 * r)) * x_t - calls[k - 1]["out"].double() / (2 * r)
        expected = sigma[k + 1] / sigma[k] * z_t - alpha[k + 1] * math.expm1(-h) * data
        torch.testing.assert_close(calls[k + 1]["z_t"].double(), expected, rtol=1e-4, atol=1e-5)
    dpm1 = [c["z_t"] for c in calls]
    calls.clear()
    generator(model, decoding_sampler="dpm-solver++", dpm_solver_order=1, **flags).generate([model], SAMPLE)
    first_order = [c["z_t"] for c in calls]
    calls.clear()
    generator(model, decoding_sampler="ddim", **flags).generate([model], SAMPLE)
    assert all(torch.allclose(a, c["z_t"], atol=1e-6) for a, c in zip(first_order, calls))
    assert not torch.allclose(dpm1[-1], first_order[-1], atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm-solver++"])
def test_decoding_timesteps_set_the_chain_of_every_sampler(monkeypatch, model, sampler):
    """--decoding-timesteps quadratic / logsnr: the denoiser is called at the spaced τ (the
    decoding schedule's, with its rescaling factor), for every sampler."""
    calls = record_denoise(monkeypatch, model)
    abar = model.schedule.alpha_bar_table
    for spacing, factor in [("quadratic", 1.0), ("logsnr", 1.0), ("logsnr", 3.0)]:
        calls.clear()
        generator(model, decoding_sampler=sampler, decoding_steps=5, decoding_timesteps=spacing,
                  decoding_rescaling_factor=factor, target_length=3).generate([model], SAMPLE)
        expected = spaced_timesteps(abar, 5, spacing, factor).tolist()
        assert [int(c["t"][0]) for c in calls] == expected[:5]
    assert spaced_timesteps(abar, 5, "quadratic").tolist() == [50, 32, 18, 8, 2, 0]


@pytest.mark.parametrize("order", [2, 3])
def test_dpm_solver_with_self_conditioning_clamping_beams_mbr_early_stopping_and_history(model, order):
    """DPM-Solver++ decodes with every other decoding technique: 2x2 beams ranked by BLEU-MBR,
    clamping, early stopping (the history keeps one entry per step run), deterministic."""
    flags = dict(decoding_sampler="dpm-solver++", dpm_solver_order=order, decoding_steps=6,
                 early_stopping_steps=2, length_beam=2, noise_beam=2, clamping=True,
                 candidate_selection="bleu-mbr")
    gen = generator(model, retain_history=True, **flags)
    torch.manual_seed(3)
    hyps = gen.generate([model], SAMPLE)
    assert [len(h) for h in hyps] == [4, 4]
    assert all(len(h["history"]) == 4 and h["steps"] == 4 for hs in hyps for h in hs)
    assert all(h["tokens"][-1] == EOS and int(h["tokens"][:-1].min()) > EOS for hs in hyps for h in hs)
    torch.manual_seed(3)
    assert outputs(gen.generate([model], SAMPLE)) == outputs(hyps)


@pytest.mark.parametrize("p1", [0.0, 1.0])
def test_prior_sampling_steps_from_the_prior_during_the_first_p2_of_the_chain(monkeypatch, model, p1):
    """SeqDiffuSeq App. E with p1 = 1, p2 = 0.5, K = 4: steps k < 2 draw z_s = sqrt(ᾱ_s) ẑ_0 + sqrt(1 − ᾱ_s) ε
    whatever z_t, the later ones are the sampler's (DDIM, η = 0); p1 = 0 is DDIM throughout."""
    calls = record_denoise(monkeypatch, model)
    draws: List[Tensor] = []  # z_T, then the steps' ε
    replace_noise(monkeypatch, lambda i, draw: draws.append(draw) or draw)
    gen = generator(
        model, decoding_steps=4, decoding_sampler="ddim", target_length=4,
        prior_sampling_prob=p1, prior_sampling_until=0.5,
    )
    gen.generate([model], SAMPLE)
    taus = respaced_timesteps(T, 4).tolist()
    assert [int(c["t"][0]) for c in calls] == taus[:4]
    assert len(draws) == 1 + (2 if p1 > 0 else 0)  # ε only while prior sampling may happen (k = 0, 1)
    alpha_bar = alphas_cumprod("sqrt", T)
    for k in range(3):
        t, s = taus[k], taus[k + 1]
        z_t, z0_hat = calls[k]["z_t"].double(), calls[k]["out"].double()
        eps = (z_t - math.sqrt(alpha_bar[t]) * z0_hat) / math.sqrt(1 - alpha_bar[t])
        expected = math.sqrt(alpha_bar[s]) * z0_hat + math.sqrt(1 - alpha_bar[s]) * eps  # DDIM
        if p1 == 1.0 and k < 2:
            expected = math.sqrt(alpha_bar[s]) * z0_hat + math.sqrt(1 - alpha_bar[s]) * draws[k + 1].double()
        torch.testing.assert_close(calls[k + 1]["z_t"].double(), expected, rtol=1e-4, atol=1e-5)


# --- 2D beams and lengths ----------------------------------------------------------------------


def test_length_times_noise_beams(model):
    favour_offsets(model, [2, -1, 0])
    gen = generator(model, decoding_steps=3, length_beam=3, noise_beam=2)
    # source lengths 6 and 4 (with EOS): the three best offsets, each repeated b2 = 2 times
    expected = [8, 8, 5, 5, 6, 6, 6, 6, 3, 3, 4, 4]
    assert gen.candidate_lengths(model.encode(SAMPLE["net_input"]["src_tokens"])).tolist() == expected
    hyps = gen.generate([model], SAMPLE)
    assert [len(h) for h in hyps] == [6, 6]
    assert lengths_of(hyps[0]) == sorted(expected[:6]) and lengths_of(hyps[1]) == sorted(expected[6:])
    assert all(h["tokens"][-1] == EOS and EOS not in h["tokens"][:-1].tolist() for h in hyps[0] + hyps[1])


def test_cpu_batches_are_decoded_in_slices_with_the_same_result(monkeypatch, model):
    """A batch whose candidates exceed SLICE_ACTIVATIONS / --ffn-dim token rows is decoded in
    runs of consecutive sources, each without its all-padding columns; with the initial noise
    fixed and deterministic DDIM the hypotheses are those of the whole batch."""
    batch = sample([5, 6, 7, 8, 9], [10, 11, 12], [13, 14], [4, 5, 6, 7])  # lengths 6, 4, 3, 5
    gen = generator(model, decoding_steps=3, length_beam=2, decoding_sampler="ddim")
    replace_noise(monkeypatch, lambda i, draw: torch.zeros_like(draw))
    src = batch["net_input"]["src_tokens"]
    assert [s.shape for _, _, s in gen.slices(src)] == [src.shape]  # 2^19 / 64 rows: one slice
    whole = gen.generate([model], batch)
    # 24 rows: candidate rows 2·length = 12, 8, 6, 10 -> sources {0, 1} (2·12), {2, 3} (2·10)
    monkeypatch.setitem(generator_module.SLICE_ACTIVATIONS, "cpu", 24 * model.cfg.ffn_dim)
    slices = gen.slices(src)
    assert [(a, b, s.shape) for a, b, s in slices] == [(0, 2, (2, 6)), (2, 4, (2, 5))]
    assert torch.equal(slices[1][2], src[2:, 1:])  # left padding trimmed to the slice's longest
    sliced = gen.generate([model], batch)
    assert [[h["tokens"].tolist() for h in hyps] for hyps in sliced] == [
        [h["tokens"].tolist() for h in hyps] for hyps in whole
    ]
    monkeypatch.setitem(generator_module.SLICE_ACTIVATIONS, "cpu", 1)  # a source alone exceeds it
    assert [s.size(0) for _, _, s in gen.slices(src)] == [1, 1, 1, 1]


@pytest.mark.parametrize("flags", [
    {"decoding_sampler": "ddpm", "length_beam": 2, "noise_beam": 2},
    {"decoding_sampler": "ddim", "ddim_eta": 0.5, "noise_beam": 3},
    {"decoding_sampler": "ddim", "prior_sampling_prob": 0.5, "prior_sampling_until": 1.0},
    {"decoding_sampler": "dpm-solver++", "dpm_solver_order": 3, "length_beam": 2},
])
def test_same_seed_same_output_whatever_the_batching(monkeypatch, model, flags):
    """Each sentence's draws come from its (seed, id) generator: decoding the sentences alone, in
    another order, in one batch or in slices gives the same hypotheses; another seed does not."""
    sources = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14], [4, 5, 6, 7]]
    gen = generator(model, decoding_steps=4, **flags)

    def decode(order: List[int], seed: int = 7) -> Dict[int, List[List[int]]]:
        batch = sample(*[sources[i] for i in order])
        batch["id"] = torch.tensor(order)
        torch.manual_seed(seed)
        hyps = gen.generate([model], batch)
        return {i: sorted(h["tokens"].tolist() for h in hs) for i, hs in zip(order, hyps)}

    together = decode([0, 1, 2, 3])
    alone = {}
    for i in range(4):
        alone.update(decode([i]))
    assert alone == together == decode([3, 1, 0, 2])
    monkeypatch.setitem(generator_module.SLICE_ACTIVATIONS, "cpu", 1)  # one source per slice
    assert decode([0, 1, 2, 3]) == together
    assert decode([0, 1, 2, 3], seed=8) != together


def test_fixed_target_length(model):
    favour_offsets(model, [2, -1])
    gen = generator(model, decoding_steps=3, length_beam=2, noise_beam=3, target_length=7)
    hyps = gen.generate([model], SAMPLE)
    assert [lengths_of(h) for h in hyps] == [[7] * 6, [7] * 6]


def test_diffused_bos_eos_are_fixed_in_the_chain_and_left_out_of_the_hypothesis(monkeypatch):
    torch.manual_seed(0)
    model = make_model(self_cond=True, diffuse_bos_eos=True).eval()
    calls = record_denoise(monkeypatch, model)
    favour_offsets(model, [2, -1])  # diffused lengths: source (with EOS) + 2 and − 1
    hyps = generator(model, decoding_steps=3, length_beam=2, clamping=True).generate([model], SAMPLE)
    # sources 6 and 4: the chain runs over 8, 5 and 6, 3 positions, the hypotheses have 2 fewer
    spans = (~calls[0]["padding_mask"]).sum(1)
    assert spans.tolist() == [8, 5, 6, 3]
    assert [lengths_of(h) for h in hyps] == [[3, 6], [1, 4]]
    for h in (h for source in hyps for h in source):
        assert h["tokens"][-1] == EOS and not set(h["tokens"][:-1].tolist()) & set(SPECIAL)
        assert h["positional_scores"].numel() == h["tokens"].numel()
    # clamping feeds back E(BOS) at the first and E(EOS) at the last diffused position
    ends = model.embed(torch.tensor([BOS, EOS]))
    for call in calls[1:]:
        rows = torch.arange(spans.numel())
        assert torch.equal(call["z0_prev"][:, 0], ends[0].expand(spans.numel(), -1))
        assert torch.equal(call["z0_prev"][rows, spans - 1], ends[1].expand(spans.numel(), -1))
    # a fixed length counts tokens; it must leave room for both ends
    fixed = generator(model, decoding_steps=2, target_length=7).generate([model], SAMPLE)
    assert [lengths_of(h) for h in fixed] == [[7], [7]]
    with pytest.raises(ValueError, match="--target-length 7 exceeds the model's --max-target-positions 8 less its diffused BOS and EOS"):
        generator(make_model(diffuse_bos_eos=True, max_target_positions=8), target_length=7)


def test_predicted_lengths_are_clamped_to_1_and_max_target_positions():
    torch.manual_seed(0)
    model = make_model(max_target_positions=6).eval()
    favour_offsets(model, [LENGTH_OFFSETS // 2 - 1, -LENGTH_OFFSETS // 2])  # offsets +127 and −128
    hyps = generator(model, decoding_steps=3, length_beam=2).generate([model], SAMPLE)
    assert [lengths_of(h) for h in hyps] == [[1, 6], [1, 6]]


def test_empty_source_gives_an_empty_hypothesis(model):
    gen = generator(model, decoding_steps=3, length_beam=2, noise_beam=2)
    hyps = gen.generate([model], sample([], [5, 6, 7]))
    assert [h["tokens"].tolist() for h in hyps[0]] == [[EOS]]
    assert hyps[0][0]["score"] == 0.0
    assert len(hyps[1]) == 4 and all(h["tokens"].numel() > 1 for h in hyps[1])


# --- candidate selection -----------------------------------------------------------------------

CONSENSUS = [4, 5, 6, 7]
CANDIDATES = [[4, 5, 6, 9], CONSENSUS, [10, 5, 6, 7]]  # each shares 3-grams with CONSENSUS only


def test_bleu_mbr_picks_the_consensus_candidate(monkeypatch, model):
    def best(selection: str) -> List[int]:
        gen = generator(model, decoding_steps=2, noise_beam=3, target_length=4, candidate_selection=selection)
        fix_rounding(monkeypatch, gen, CANDIDATES, scores=[-0.1, -0.9, -0.5])
        (hyps,) = gen.generate([model], sample([5, 6, 7]))
        assert sorted(h["tokens"][:-1].tolist() for h in hyps) == sorted(CANDIDATES)
        return hyps[0]["tokens"].tolist()

    assert best("bleu-mbr") == CONSENSUS + [EOS]
    assert best("score") == CANDIDATES[0] + [EOS]


def test_length_predictor_probabilities_count_in_the_selection(monkeypatch, model):
    """--length-score-weight λ: score ranks by mean token log-prob + λ·log p(n|x); bleu-mbr weighs
    each candidate as evidence by p(n|x)^λ; λ = 0 ignores the length predictor."""
    favour_offsets(model, [0, -1])  # source [5, 6, 7] (4 with EOS): lengths 4, then 3
    with torch.no_grad():
        model.length_head.bias[LENGTH_OFFSETS // 2] = 4.0  # p(4) = e⁴ / (e⁴ + e¹ + 254 e⁰)
    lprobs = torch.log_softmax(model.length_head.bias, dim=0)
    log_p4, log_p3 = float(lprobs[LENGTH_OFFSETS // 2]), float(lprobs[LENGTH_OFFSETS // 2 - 1])
    enc = model.encode(sample([5, 6, 7])["net_input"]["src_tokens"])
    assert model.length_log_probs(enc, torch.tensor([[4, 3]]))[0].tolist() == pytest.approx([log_p4, log_p3])

    def ranked(weight: float, selection: str, candidates: List[List[int]], scores: List[float]) -> List[List[int]]:
        gen = generator(model, decoding_steps=2, length_beam=2, candidate_selection=selection,
                        length_score_weight=weight)
        fix_rounding(monkeypatch, gen, candidates, scores)
        (hyps,) = gen.generate([model], sample([5, 6, 7]))
        by_length = {len(h["tokens"]) - 1: h["length_score"] for h in hyps}
        assert by_length == {4: pytest.approx(weight * log_p4), 3: pytest.approx(weight * log_p3)}
        return [h["tokens"][:-1].tolist() for h in hyps]

    # the length-3 candidate's tokens score -0.1 each, the length-4 one's -0.9: the token score
    # alone prefers length 3; with λ = 1 the 3.0-nat length gap outweighs 0.8
    candidates = [[4, 5, 6, 7], [4, 5, 6, 0]]  # rounding rows: length 4, then length 3 (+ pad)
    assert log_p4 - log_p3 == pytest.approx(3.0)
    assert ranked(0.0, "score", candidates, [-0.9, -0.1]) == [[4, 5, 6], [4, 5, 6, 7]]
    assert ranked(1.0, "score", candidates, [-0.9, -0.1]) == [[4, 5, 6, 7], [4, 5, 6]]
    assert ranked(0.2, "score", candidates, [-0.9, -0.1]) == [[4, 5, 6], [4, 5, 6, 7]]  # 0.6 < 0.8


def test_weighted_mbr_utilities_by_hand():
    """u_i = Σ_j w_j BLEU(c_i, c_j) / Σ_j w_j over every candidate, i included (BLEU(c, c) = 1)."""
    a, b, c = [1, 2, 3, 4], [1, 2, 3, 5], [6, 7, 8, 9]
    ab, ba = add_one_sentence_bleu(a, b), add_one_sentence_bleu(b, a)
    assert ab > 0 and add_one_sentence_bleu(a, c) == add_one_sentence_bleu(c, a) == 0.0
    assert mbr_utilities([a, b, c]) == pytest.approx([(1 + ab) / 3, (1 + ba) / 3, 1 / 3])
    assert mbr_utilities([a, b, c], [2.0, 1.0, 1.0]) == pytest.approx([(2 + ab) / 4, (2 * ba + 1) / 4, 1 / 4])
    # the evidence of a likely candidate counts for itself: with one candidate per length (a
    # 3x1 beam) the likely one wins although the two others agree with each other
    d = [1, 2, 3, 6]
    utilities = mbr_utilities([c, b, d], [0.8, 0.1, 0.1])
    assert max(range(3), key=utilities.__getitem__) == 0
    assert max(range(3), key=mbr_utilities([c, b, d]).__getitem__) != 0
    assert mbr_utilities([a]) == [1.0]


class StubReranker(nn.Module):
    """An 'autoregressive model' whose next-token distribution always favours ``favourite``."""

    def __init__(self, favourite: int, src_vocab: int = VOCAB, tgt_vocab: int = VOCAB) -> None:
        super().__init__()
        self.encoder = SimpleNamespace(embed_tokens=SimpleNamespace(num_embeddings=src_vocab))
        self.decoder = SimpleNamespace(output_projection=SimpleNamespace(out_features=tgt_vocab))
        self.favourite, self.vocab = favourite, tgt_vocab
        self.inputs: List[Tuple[Tensor, Tensor, Tensor]] = []

    def forward(
        self, src_tokens: Tensor, src_lengths: Tensor, prev_output_tokens: Tensor
    ) -> Tuple[Tensor, None]:
        self.inputs.append((src_tokens, src_lengths, prev_output_tokens))
        logits = torch.zeros(*prev_output_tokens.shape, self.vocab)
        logits[..., self.favourite] = 5.0
        return logits, None

    def get_normalized_probs(self, net_output: Tuple[Tensor, None], log_probs: bool) -> Tensor:
        return net_output[0].log_softmax(dim=-1)


def test_reranker_picks_the_candidate_the_ar_model_prefers(monkeypatch, model):
    ar = StubReranker(favourite=7)
    gen = generator(model, ar, decoding_steps=2, noise_beam=3, target_length=4, candidate_selection="reranker")
    candidates = [[5, 6, 8, 9], [7, 7, 7, 7], [5, 7, 9, 9]]
    fix_rounding(monkeypatch, gen, candidates, scores=[-0.1, -0.9, -0.5])
    (hyps,) = gen.generate([model], sample([5, 6, 7]))
    assert [h["tokens"][:-1].tolist() for h in hyps] == [candidates[1], candidates[2], candidates[0]]
    log_z = math.log(math.exp(5.0) + VOCAB - 1)
    assert hyps[0]["reranker_score"] == pytest.approx((4 * (5.0 - log_z) - log_z) / 5, rel=1e-5)
    src, src_lengths, prev = ar.inputs[0]
    assert src.tolist() == [[5, 6, 7, EOS]] * 3 and src_lengths.tolist() == [4] * 3
    assert prev.tolist() == [[EOS, *c] for c in candidates]


def test_reranker_needs_a_second_model_with_the_same_dictionaries(model):
    with pytest.raises(ValueError, match="needs an autoregressive fairseq model as the second checkpoint"):
        generator(model, candidate_selection="reranker")
    with pytest.raises(ValueError, match="needs an autoregressive fairseq model as the second checkpoint"):
        generator(model, model, candidate_selection="reranker")
    for sizes in ({"src_vocab": VOCAB + 1}, {"tgt_vocab": VOCAB - 1}):
        with pytest.raises(ValueError, match=r"the reranker's dictionaries .* differ from the diffusion"):
            generator(model, StubReranker(7, **sizes), candidate_selection="reranker")


# --- steps, history, seeds ---------------------------------------------------------------------


@pytest.mark.parametrize("steps,early", [(6, 0), (6, 2), (6, 5)])
def test_early_stopping_runs_k_minus_e_denoiser_calls(monkeypatch, model, steps, early):
    calls = record_denoise(monkeypatch, model)
    gen = generator(model, retain_history=True, decoding_steps=steps, early_stopping_steps=early, noise_beam=2)
    hyps = gen.generate([model], SAMPLE)
    assert len(calls) == steps - early
    assert [int(c["t"][0]) for c in calls] == gen.timesteps[: steps - early].tolist()
    for h in hyps[0] + hyps[1]:
        assert h["steps"] == steps - early and len(h["history"]) == steps - early
        assert torch.equal(h["history"][-1]["tokens"], h["tokens"])


def test_seed_reproduces_and_another_seed_differs(model):
    gen = generator(model, decoding_steps=5, length_beam=3, noise_beam=3)

    def run(seed: int) -> List[Tuple[List[int], List[float]]]:
        torch.manual_seed(seed)
        return outputs(gen.generate([model], SAMPLE))

    first = run(11)
    assert run(11) == first
    assert run(12) != first


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_decoding_keeps_the_schedule_in_float64(monkeypatch, model, precision):
    """fairseq-generate --bf16 casts the model (``prepare_for_inference_``), --fp16 calls
    ``model.half()`` (fp16 runs on a CPU too, slowly: the dtype handling a GPU sees): the network
    runs in half precision, the chain z_τ in float32, the ᾱ table stays float64, and the
    candidates get the float32 model's (well-separated) lengths."""
    favour_offsets(model, [2, -1])
    gen = generator(model, decoding_steps=4, length_beam=2, noise_beam=2, decoding_sampler="ddim")
    torch.manual_seed(3)
    full = gen.generate([model], SAMPLE)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    cfg = SimpleNamespace(
        common=SimpleNamespace(bf16=precision == "bf16", fp16=precision == "fp16"), generation=SimpleNamespace()
    )
    if precision == "fp16":
        model.half()  # what fairseq-generate does for --fp16
    model.prepare_for_inference_(cfg)
    assert model.schedule.alpha_bar_table.dtype == torch.float64
    assert model.decoder_in.weight.dtype == dtype
    calls = record_denoise(monkeypatch, model)
    torch.manual_seed(3)
    half = gen.generate([model], SAMPLE)
    assert {c["z_t"].dtype for c in calls} == {torch.float32}
    assert {c["out"].dtype for c in calls} == {dtype}
    both = SimpleNamespace(common=SimpleNamespace(bf16=True, fp16=True), generation=SimpleNamespace())
    with pytest.raises(ValueError, match="--bf16 and --fp16 exclude each other"):
        model.prepare_for_inference_(both)
    assert [len(h) for h in half] == [4, 4]
    assert all(torch.isfinite(h["positional_scores"]).all() for hyps in half for h in hyps)
    assert [lengths_of(h) for h in half] == [lengths_of(h) for h in full] == [[5, 5, 8, 8], [3, 3, 6, 6]]


# --- clamping ----------------------------------------------------------------------------------


def is_embedding_row(z: Tensor, table: Tensor) -> bool:
    return bool((z.unsqueeze(-2) == table).all(dim=-1).any(dim=-1).all())


def test_clamping_feeds_back_embedding_rows(monkeypatch, model):
    calls = record_denoise(monkeypatch, model)
    table = model.embed.table()

    def fed_back(clamping: bool) -> List[Tuple[Tensor, Tensor, Tensor]]:
        """(self-conditioning input of step k + 1, model output of step k, padding mask)."""
        calls.clear()
        generator(model, decoding_steps=4, length_beam=2, clamping=clamping).generate([model], SAMPLE)
        assert calls[0]["z0_prev"] is None
        return [(calls[k + 1]["z0_prev"], calls[k]["out"], calls[k]["padding_mask"])
                for k in range(len(calls) - 1)]

    for z0_prev, out, padding_mask in fed_back(clamping=True):
        assert padding_mask.any()  # candidates of different lengths: padding is rounded to PAD
        logits = model.logits(out)
        logits[..., SPECIAL] = float("-inf")
        tokens = logits.argmax(dim=-1).masked_fill(padding_mask, PAD)
        assert torch.equal(z0_prev, model.embed(tokens))
        assert is_embedding_row(z0_prev, table)
    for z0_prev, out, _ in fed_back(clamping=False):
        assert torch.equal(z0_prev, out) and not is_embedding_row(z0_prev, table)


@pytest.mark.parametrize("adaptive", [False, True])
def test_clamping_default_follows_the_checkpoints_schedule(monkeypatch, adaptive):
    """Unset (None), --clamping is on for an adaptive-schedule model and off for a fixed one;
    an explicit value wins either way; the default chain equals the explicit one."""
    torch.manual_seed(0)
    model = make_model(self_cond=True, adaptive_schedule=adaptive).eval()
    assert DecodingConfig().clamping is None
    assert generator(model).cfg["clamping"] is adaptive
    for explicit in (False, True):
        assert generator(model, clamping=explicit).cfg["clamping"] is explicit
    calls = record_denoise(monkeypatch, model)
    hypotheses = {}
    for clamping in (None, adaptive, not adaptive):
        calls.clear()
        (hyps, _) = generator(model, decoding_steps=3, clamping=clamping).generate([model], SAMPLE)
        hypotheses[clamping] = (hyps[0]["tokens"].tolist(), calls[1]["z0_prev"])
    table = model.embed.table()
    assert is_embedding_row(hypotheses[None][1], table) is adaptive
    assert hypotheses[None][0] == hypotheses[adaptive][0]
    assert torch.equal(hypotheses[None][1], hypotheses[adaptive][1])
    assert not torch.equal(hypotheses[None][1], hypotheses[not adaptive][1])


def test_clamping_flag_is_tri_state_on_the_command_line():
    from fairseq import options
    from diffusion_plugin.tasks.diffusion_translation import DiffusionTranslationTask

    def parsed(*flags: str) -> Optional[bool]:
        parser = options.get_generation_parser(default_task="translation")
        DiffusionTranslationTask.add_args(parser)
        return parser.parse_args(["data", *flags]).clamping

    assert parsed() is None
    assert parsed("--clamping") is True
    assert parsed("--no-clamping") is False


def test_clamped_hypothesis_is_the_rounding_of_the_model_output(monkeypatch, model):
    """Rounding the clamped e_4 again would give token 5 (e_4·e_5 = 2 > e_4·e_4 = 1)."""
    with torch.no_grad():
        model.embed.weight.zero_()
        model.embed.weight[4, :2] = torch.tensor([1.0, 0.0])
        model.embed.weight[5, :2] = torch.tensor([2.0, 2.0])
    z0_hat = torch.zeros(LATENT)
    z0_hat[:2] = torch.tensor([1.0, -1.0])  # · e_4 = 1, · e_5 = 0, · others = 0
    monkeypatch.setattr(model, "denoise", lambda z_t, *args: z0_hat.expand(z_t.shape))
    gen = generator(model, decoding_steps=3, target_length=3, clamping=True)
    (hyps,) = gen.generate([model], sample([5, 6]))
    assert hyps[0]["tokens"].tolist() == [4, 4, 4, EOS]
    expected = 1.0 - math.log(math.exp(1.0) + VOCAB - len(SPECIAL) - 1)  # log-softmax over real symbols
    assert hyps[0]["score"] == pytest.approx(expected, rel=1e-5)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags,message",
    [
        ({"length_beam": 0}, r"--length-beam must be >= 1, got 0"),
        ({"noise_beam": 0}, r"--noise-beam must be >= 1, got 0"),
        ({"early_stopping_steps": 20}, r"--early-stopping-steps must be in \[0, --decoding-steps=20\), got 20"),
        ({"early_stopping_steps": -1}, r"--early-stopping-steps must be in \[0, --decoding-steps=20\), got -1"),
        ({"ddim_eta": 1.5}, r"--ddim-eta must be in \[0, 1\], got 1.5"),
        ({"length_score_weight": -1.0}, r"--length-score-weight must be a finite number >= 0, got -1.0"),
        ({"length_score_weight": math.inf}, r"--length-score-weight must be a finite number >= 0, got inf"),
        ({"ddim_eta": -0.1}, r"--ddim-eta must be in \[0, 1\], got -0.1"),
        ({"decoding_steps": 0}, rf"--decoding-steps must be in \[1, --diffusion-steps={T}\], got 0"),
        ({"decoding_steps": T + 1}, rf"--decoding-steps must be in \[1, --diffusion-steps={T}\], got {T + 1}"),
        ({"decoding_rescaling_factor": -1.0}, r"--decoding-rescaling-factor must be a finite number > 0, got -1.0"),
        ({"decoding_rescaling_factor": 0.0}, r"--decoding-rescaling-factor must be a finite number > 0, got 0.0"),
        ({"decoding_rescaling_factor": math.nan}, r"--decoding-rescaling-factor must be a finite number > 0, got nan"),
        ({"decoding_rescaling_factor": math.inf}, r"--decoding-rescaling-factor must be a finite number > 0, got inf"),
        ({"prior_sampling_prob": 1.5}, r"--prior-sampling-prob must be in \[0, 1\], got 1.5"),
        ({"prior_sampling_until": -0.5}, r"--prior-sampling-until must be in \[0, 1\], got -0.5"),
        ({"target_length": -3}, r"--target-length must be >= 0, got -3"),
        ({"length_beam": "2"}, r"--length-beam must be an integer, got '2'"),
        ({"noise_beam": 2.5}, r"--noise-beam must be an integer, got 2.5"),
        ({"target_length": math.nan}, r"--target-length must be an integer, got nan"),
        ({"decoding_steps": 3.7}, r"--decoding-steps must be an integer, got 3.7"),
        ({"length_beam": True}, r"--length-beam must be an integer, got True"),
        ({"ddim_eta": "0.5"}, r"--ddim-eta must be a number, got '0.5'"),
        ({"clamping": 1}, r"--clamping must be true, false or None \(the model's default\), got 1"),
        ({"decoding_sampler": "euler"}, r"--decoding-sampler must be one of \('ddim', 'ddpm', 'dpm-solver\+\+'\), got 'euler'"),
        ({"dpm_solver_order": 4}, r"--dpm-solver-order must be 1, 2 or 3, got 4"),
        ({"decoding_timesteps": "karras"}, r"--decoding-timesteps must be one of \('uniform', 'logsnr', 'quadratic'\), got 'karras'"),
        ({"decoding_sampler": "dpm-solver++", "ddim_eta": 0.5}, r"--ddim-eta applies to --decoding-sampler ddim; dpm-solver\+\+ is deterministic"),
        ({"decoding_sampler": "dpm-solver++", "prior_sampling_prob": 0.5},
         r"--prior-sampling-prob \(SeqDiffuSeq's prior steps\) applies to --decoding-sampler ddpm or ddim, not dpm-solver\+\+"),
    ],
)
def test_bad_decoding_flags(model, flags, message):
    with pytest.raises(ValueError, match=message):
        check_decoding(decoding(**flags), T)
    with pytest.raises(ValueError, match=message):
        generator(model, **flags)


def test_absurd_decoding_rescaling_factor_warns(model, caplog):
    with caplog.at_level(logging.WARNING):
        generator(model, decoding_rescaling_factor=1e30)
    assert "--decoding-rescaling-factor 1e+30" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        generator(model, decoding_rescaling_factor=4.0)
    assert "rescaling-factor" not in caplog.text


def test_length_beam_beyond_the_length_classes_is_refused(model):
    classes = model.length_head.out_features
    generator(model, length_beam=classes)
    with pytest.raises(ValueError, match=rf"--length-beam {classes + 1} exceeds the length predictor's {classes} classes"):
        generator(model, length_beam=classes + 1)
    generator(model, length_beam=classes + 1, target_length=3)  # fixed lengths: no predictor


@pytest.mark.parametrize("size", [7, 1024, 1500, 9808])
def test_block_argmax_equals_torch_max(size):
    """max_last = x.max(-1): values, and the first index on ties (blocked -inf columns, a row
    maximum repeated in two blocks and in the tail)."""
    torch.manual_seed(0)
    x = torch.randn(6, size)
    x[:, :3] = float("-inf")
    x[1, size // 3] = x[1, size - 1] = 9.0  # tie across blocks / with the tail
    x[2, size - 1] = 10.0  # maximum in the tail only
    x[3] = 1.0  # all equal: index 0... after the -inf columns
    x[3, :3] = float("-inf")
    values, indices = generator_module.max_last(x)
    expected = x.max(dim=-1)
    assert torch.equal(values, expected.values) and torch.equal(indices, expected.indices)
    values3, indices3 = generator_module.max_last(x.view(2, 3, size))  # leading dimensions kept
    assert torch.equal(indices3, expected.indices.view(2, 3)) and values3.shape == (2, 3)
    assert indices[3] == 3 and indices[1] == size // 3


def test_rounding_scores_are_log_softmax_at_the_argmax(model):
    """round_rows: argmax tokens and log p(argmax) = log_softmax at it, blocked symbols excluded."""
    torch.manual_seed(0)
    gen = generator(model)
    z = torch.randn(5, LATENT)
    tokens, scores = gen.round_rows(z)
    logits = model.logits(z)
    logits[:, SPECIAL] = float("-inf")
    expected = logits.log_softmax(dim=-1).max(dim=-1)
    assert torch.equal(tokens, expected.indices)
    torch.testing.assert_close(scores, expected.values, atol=1e-5, rtol=1e-5)


def test_rounding_in_chunks_equals_the_whole_product(monkeypatch, model):
    """Rows rounded in chunks of ROUNDING_CHUNK logits: same tokens and log-probabilities as
    argmax / log-softmax of the whole [N, L, V] product (special symbols excluded) outside the
    padding, where the token is padding and the score 0; the same without padding."""
    z0_hat = torch.randn(3, 5, LATENT) * 3
    padding_mask = torch.arange(5) >= torch.tensor([[5], [2], [4]])
    logits = model.logits(z0_hat)
    logits[..., SPECIAL] = float("-inf")
    expected = logits.log_softmax(dim=-1).max(dim=-1)
    monkeypatch.setitem(generator_module.ROUNDING_CHUNK, "cpu", 2 * VOCAB + 1)  # 2 rows a chunk
    tokens, scores = generator(model).round(z0_hat, padding_mask)
    assert tokens.shape == (3, 5)
    assert torch.equal(tokens[~padding_mask], expected.indices[~padding_mask])
    assert torch.allclose(scores[~padding_mask], expected.values[~padding_mask], atol=1e-5)
    assert (tokens[padding_mask] == PAD).all() and (scores[padding_mask] == 0).all()
    # no padding anywhere (every batch of one source with b = 1): the rows are not gathered
    full_tokens, full_scores = generator(model).round(z0_hat, torch.zeros(3, 5, dtype=torch.bool))
    assert torch.equal(full_tokens, expected.indices) and full_scores.dtype == torch.float
    assert torch.allclose(full_scores, expected.values, atol=1e-5)
