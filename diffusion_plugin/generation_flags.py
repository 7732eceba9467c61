"""fairseq's own generation flags (``--beam``, ``--max-len-a``, ``--iter-decode-max-iter``, ...)
under diffusion decoding: each is given its non-autoregressive meaning or refused with a message
naming the plugin's flag, never silently ignored.  They reach ``build_generator`` from
``fairseq-generate`` / ``-interactive`` (the generation config), ``--eval-bleu-args`` and the hub's
``translate(**kwargs)``; a flag at fairseq's default value is not a request.
"""
import difflib
from argparse import Namespace
from typing import Any, Dict, Iterable, Tuple

# flag: (fairseq's default, why it is refused / what to use instead)
REFUSED: Dict[str, Tuple[Any, str]] = {
    "beam": (5, "diffusion decoding has no beam search: use --length-beam B1 --noise-beam B2 "
                "(B1 x B2 candidates per source)"),
    "unnormalized": (False, "candidates are ranked by --candidate-selection"),
    "no_early_stop": (False, "there is no beam search to stop: see --early-stopping-steps"),
    "no_beamable_mm": (False, "there is no beam search"),
    "lenpen": (1, "candidates are ranked by their mean token log-probability (--candidate-selection)"),
    "unkpen": (0, "rounding never emits <unk>"),
    "replace_unk": (None, "rounding never emits <unk>, and there is no alignment to copy from"),
    "score_reference": (False, "scoring references under the diffusion model is not defined "
                               "(hub.score() included)"),
    "prefix_size": (0, "every position is decoded at once: there is no prefix to force"),
    "no_repeat_ngram_size": (0, "every position is decoded at once"),
    "sampling": (False, "the reverse process samples by construction: --decoding-sampler ddpm, "
                        "or ddim with --ddim-eta"),
    "sampling_topk": (-1, "rounding is argmax over the vocabulary"),
    "sampling_topp": (-1.0, "rounding is argmax over the vocabulary"),
    "temperature": (1.0, "rounding is argmax over the vocabulary"),
    "constraints": (None, "lexical constraints need beam search"),
    "diverse_beam_groups": (-1, "there is no beam search: --noise-beam draws several candidates"),
    "diverse_beam_strength": (0.5, "there is no beam search"),
    "diversity_rate": (-1.0, "there is no beam search"),
    "print_alignment": (None, "a non-autoregressive denoiser has no source-target alignment"),
    "lm_path": (None, "no language-model fusion; an AR model reranks with --candidate-selection "
                      "reranker --path diffusion.pt:transformer.pt"),
    "lm_weight": (0.0, "no language-model fusion"),
    "iter_decode_eos_penalty": (0.0, "lengths come from the length predictor (--length-beam)"),
    "iter_decode_with_external_reranker": (False, "use --candidate-selection reranker --path "
                                                  "diffusion.pt:transformer.pt"),
    "retain_dropout": (False, "decoding runs the denoiser in eval mode"),
    "decoding_format": (None, "not a sequence-to-sequence output format"),
    "eos_token": (None, "hypotheses end at the dictionary's EOS"),
}
# fairseq NAT flag -> (its default, the plugin's flag it means, that flag's default)
ALIASES: Dict[str, Tuple[Any, str, Any]] = {
    "iter_decode_max_iter": (10, "decoding_steps", 20),
    "iter_decode_with_beam": (1, "length_beam", 1),
}
# fairseq flags honoured on the predicted lengths, with their defaults
LENGTH_FLAGS: Dict[str, Any] = {"max_len_a": 0, "max_len_b": 200, "min_len": 1, "match_source_len": False}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def given_names(args: Any) -> Iterable[str]:
    """The argument names ``args`` holds (a generation config, a Namespace of --eval-bleu-args)."""
    if isinstance(args, Namespace):
        return vars(args).keys()
    return args.keys() if hasattr(args, "keys") else ()


def check_names(args: Any, decoding: Dict[str, Any]) -> None:
    """Refuse a name that is neither fairseq's generation flag nor ours (a hub ``translate()``
    keyword with a typo would otherwise be ignored), suggesting the closest."""
    from fairseq.dataclass.configs import GenerationConfig

    known = set(GenerationConfig.__dataclass_fields__) | set(decoding)
    for name in given_names(args):
        if name.startswith("_") or name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown decoding argument {name!r}{hint}")


def fairseq_generation_flags(args: Any, decoding: Dict[str, Any]) -> Dict[str, Any]:
    """Check fairseq's generation flags in ``args``; return ``decoding`` (the plugin's decoding
    flags, updated by the aliases) plus the length flags for :class:`DiffusionGenerator`."""
    check_names(args, decoding)
    for name, (default, reason) in REFUSED.items():
        value = getattr(args, name, default)
        if value == default:
            continue
        raise ValueError(f"{flag(name)} {value}: not supported by diffusion decoding ({reason})")
    decoding = dict(decoding)
    for name, (default, ours, our_default) in ALIASES.items():
        value = getattr(args, name, default)
        if value == default:
            continue
        if decoding[ours] not in (our_default, value):
            raise ValueError(
                f"{flag(name)} {value} contradicts {flag(ours)} {decoding[ours]} (it means {flag(ours)})"
            )
        decoding[ours] = value
    lengths = {name: getattr(args, name, default) for name, default in LENGTH_FLAGS.items()}
    lengths["max_len_b"] = int(lengths["max_len_b"])
    if lengths["max_len_a"] < 0 or lengths["min_len"] < 1:
        raise ValueError(
            f"--max-len-a must be >= 0 and --min-len >= 1, got {lengths['max_len_a']} and {lengths['min_len']}"
        )
    return {**decoding, **lengths}
