"""SentenceNoise: each sentence's draws depend on (seed, id) alone."""
import pytest
import torch

from diffusion_plugin.diffusion.noise import SentenceNoise, sentence_seed

CPU = torch.device("cpu")


def draws(seed, ids, lengths, per_source=2, dim=3):
    noise = SentenceNoise(seed, ids, per_source, torch.tensor(lengths), dim)
    return noise.normal(CPU, torch.float32), noise.normal(CPU, torch.float32), noise.uniform(CPU)


def test_a_sentence_draws_the_same_whatever_shares_its_batch():
    # sentence 7 with candidate lengths 3 and 2: alone, then after a longer sentence 4
    z_alone, eps_alone, u_alone = draws(1, [7], [3, 2])
    z_pair, eps_pair, u_pair = draws(1, [4, 7], [6, 5, 3, 2])
    assert z_pair.shape == (4, 6, 3) and z_alone.shape == (2, 3, 3)
    assert torch.equal(z_pair[2:, :3], z_alone) and torch.equal(eps_pair[2:, :3], eps_alone)
    assert torch.equal(u_pair[2:], u_alone)
    assert not z_pair[2:, 3:].any()  # beyond the sentence's longest candidate: zero
    assert not torch.equal(z_alone, eps_alone)  # successive draws differ
    assert not torch.equal(draws(2, [7], [3, 2])[0], z_alone)  # another seed


def test_sentence_seeds_are_distinct_and_63_bit():
    seeds = {sentence_seed(seed, i) for seed in range(20) for i in range(500)}
    assert len(seeds) == 20 * 500
    assert all(0 <= s < 2**63 for s in seeds)
    assert sentence_seed(1, 2) != sentence_seed(2, 1)


def test_lengths_must_match_the_candidates():
    with pytest.raises(ValueError, match="3 candidate lengths for 2 sentences x 2"):
        SentenceNoise(1, [0, 1], 2, torch.tensor([1, 2, 3]), 4)
