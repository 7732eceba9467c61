"""fairseq's generation flags under diffusion decoding: NAT meanings, or refusals naming our flag."""
from argparse import Namespace

import pytest
import torch

from diffusion_plugin.generation_flags import ALIASES, REFUSED, fairseq_generation_flags
from diffusion_plugin.generator import DECODING_FIELDS, DecodingConfig
from test_generator import favour_offsets, generator, lengths_of, sample
from test_model import make_model

DEFAULTS = {name: getattr(DecodingConfig(), name) for name in DECODING_FIELDS}


def test_fairseq_generation_defaults_are_no_request():
    from fairseq.dataclass.configs import GenerationConfig

    out = fairseq_generation_flags(GenerationConfig(), DEFAULTS)
    assert {k: out[k] for k in DEFAULTS} == DEFAULTS
    assert (out["max_len_a"], out["max_len_b"], out["min_len"], out["match_source_len"]) == (0, 200, 1, False)
    assert fairseq_generation_flags(Namespace(), DEFAULTS)["max_len_b"] == 200  # --eval-bleu-args {}
    for name, (default, _) in REFUSED.items():  # the table's defaults are fairseq's
        assert getattr(GenerationConfig(), name) == default, name


@pytest.mark.parametrize("name,value,message", [
    ("beam", 4, r"--beam 4: not supported by diffusion decoding \(diffusion decoding has no beam search: use --length-beam"),
    ("sampling", True, r"--sampling True: .*--decoding-sampler ddpm"),
    ("prefix_size", 1, r"--prefix-size 1: "),
    ("lenpen", 0.6, r"--lenpen 0.6: "),
    ("score_reference", True, r"--score-reference True: .*hub.score\(\) included"),
    ("print_alignment", "hard", r"--print-alignment hard: .*no source-target alignment"),
])
def test_refused_flags_name_the_flag(name, value, message):
    with pytest.raises(ValueError, match=message):
        fairseq_generation_flags(Namespace(**{name: value}), DEFAULTS)


def test_nat_aliases_mean_our_flags():
    out = fairseq_generation_flags(Namespace(iter_decode_max_iter=7, iter_decode_with_beam=3), DEFAULTS)
    assert (out["decoding_steps"], out["length_beam"]) == (7, 3)
    same = fairseq_generation_flags(Namespace(iter_decode_max_iter=7), dict(DEFAULTS, decoding_steps=7))
    assert same["decoding_steps"] == 7
    with pytest.raises(ValueError, match="--iter-decode-max-iter 7 contradicts --decoding-steps 5"):
        fairseq_generation_flags(Namespace(iter_decode_max_iter=7), dict(DEFAULTS, decoding_steps=5))
    assert set(ALIASES) == {"iter_decode_max_iter", "iter_decode_with_beam"}


def test_length_flags_bound_the_predicted_lengths():
    torch.manual_seed(0)
    model = make_model().eval()
    favour_offsets(model, [4, 0])  # source lengths 6 and 4 (with EOS): predicted 10, 6 and 8, 4
    batch = sample([5, 6, 7, 8, 9], [10, 11, 12])
    encoder_out = model.encode(batch["net_input"]["src_tokens"])

    def lengths(**flags):
        return generator(model, decoding_steps=2, length_beam=2, **flags).candidate_lengths(encoder_out).tolist()

    assert lengths() == [10, 6, 8, 4]
    assert lengths(max_len_a=1.0, max_len_b=1) == [7, 6, 5, 4]  # <= |x| + 1
    assert lengths(max_len_b=5, min_len=5) == [5, 5, 5, 5]
    assert lengths(match_source_len=True) == [5, 5, 3, 3]  # the sources' tokens without EOS
    hyps = generator(model, decoding_steps=2, match_source_len=True).generate([model], batch)
    assert [lengths_of(h) for h in hyps] == [[5], [3]]
    with pytest.raises(ValueError, match="--match-source-len and --target-length both fix the lengths"):
        generator(model, match_source_len=True, target_length=3)
    with pytest.raises(ValueError, match="--max-len-a must be >= 0 and --min-len >= 1, got 0 and 0"):
        fairseq_generation_flags(Namespace(min_len=0), DEFAULTS)


def test_two_denoisers_without_the_reranker_are_refused():
    torch.manual_seed(0)
    model = make_model().eval()
    with pytest.raises(ValueError, match="--path holds 2 checkpoints: ensembles of denoisers are not supported"):
        generator(model, model)


def test_unknown_names_are_refused_with_the_closest():
    with pytest.raises(ValueError, match=r"unknown decoding argument 'lenght_beam' \(did you mean length_beam\?\)"):
        fairseq_generation_flags(Namespace(lenght_beam=3), DEFAULTS)
    with pytest.raises(ValueError, match=r"unknown decoding argument 'zzz'$"):
        fairseq_generation_flags(Namespace(zzz=1), DEFAULTS)
    fairseq_generation_flags(Namespace(length_beam=3, nbest=2, _name="x"), DEFAULTS)
