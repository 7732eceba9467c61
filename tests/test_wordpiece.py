"""diffusion_plugin/wordpiece.py (BERT basic tokenisation + greedy longest-match-first WordPiece,
offline) and its fairseq hook ``--bpe wordpiece``."""
from pathlib import Path

import pytest

from diffusion_plugin.wordpiece import (UNKNOWN, WordPiece, basic_tokenize, decode,
                                        dictionary_entries, load_vocab)

VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "aff", "##aff", "##a",
         "##able", "able", "travel", "##ling", "##l", "cafe", "café", "?", ",", "!", "的", "<unk>"]


def test_basic_tokenisation_splits_punctuation_lowercases_and_strips_accents() -> None:
    assert basic_tokenize("Héllo,  World!\tIt's\x00 a\u200btest") == \
        ["hello", ",", "world", "!", "it", "'", "s", "atest"]
    assert basic_tokenize("Héllo, World!", lowercase=False) == ["Héllo", ",", "World", "!"]
    assert basic_tokenize("我的猫") == ["我", "的", "猫"]  # CJK ideographs one by one
    assert basic_tokenize("a$b 3.5") == ["a", "$", "b", "3", ".", "5"]


def test_greedy_longest_match_first() -> None:
    wp = WordPiece(VOCAB)
    assert wp.word("unaffable") == ["un", "##aff", "##able"]  # ##aff before ##a
    assert wp.word("travelling") == ["travel", "##ling"]  # ##ling before ##l
    assert wp.word("unx") == [UNKNOWN]  # no cut for the rest: the whole word is unknown
    assert wp.word("a" * 101) == [UNKNOWN]
    assert wp.encode("Unaffable, travelling CAFÉ?") == "un ##aff ##able , travel ##ling cafe ?"
    assert WordPiece(VOCAB, lowercase=False).encode("café") == "café"
    assert decode("un ##aff ##able , travel ##ling") == "unaffable , travelling"
    assert decode("##able x") == "able x"


def test_vocab_file_and_dictionary_entries(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n\n", encoding="utf-8")
    assert load_vocab(path) == VOCAB
    assert dictionary_entries(VOCAB) == ["un", "aff", "##aff", "##a", "##able", "able", "travel",
                                         "##ling", "##l", "cafe", "café", "?", ",", "!", "的"]
    path.write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.txt line 3: 'a' repeats line 1"):
        load_vocab(path)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no entries"):
        load_vocab(path)


def test_fairseq_bpe_hook(tmp_path: Path) -> None:
    from argparse import Namespace

    from fairseq.data import encoders

    import diffusion_plugin  # noqa: F401  (registers --bpe wordpiece)

    decoder = encoders.build_bpe(Namespace(bpe="wordpiece"))
    assert decoder.decode("travel ##ling un ##aff ##able") == "travelling unaffable"
    assert not decoder.is_beginning_of_word("##ling") and decoder.is_beginning_of_word("un")
    with pytest.raises(ValueError, match="--bpe wordpiece needs --wordpiece-vocab FILE"):
        decoder.encode("travelling")
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB), encoding="utf-8")
    encoder = encoders.build_bpe(Namespace(bpe="wordpiece", wordpiece_vocab=str(path)))
    assert encoder.encode("Travelling unaffable!") == "travel ##ling un ##aff ##able !"
