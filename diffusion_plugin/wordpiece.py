"""WordPiece tokenisation over a BERT ``vocab.txt``, offline and without fairseq or transformers.

BERT's two stages, as its paper and vocabulary format define them:

1. basic tokenisation: control characters dropped, whitespace normalised, CJK ideographs split
   off, then (uncased vocabularies) lowercasing and accent stripping (NFD, combining marks
   removed), then a split around every punctuation character;
2. WordPiece: each word is cut greedily into the longest vocabulary entries from its start, the
   pieces after the first written ``##piece``; a word with no such cut (or longer than 100
   characters) becomes one unknown token.

``<unk>`` stands for the unknown token in the text this module writes, since that is the symbol
fairseq's dictionaries reserve for it.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Iterable, List, Sequence

CONTINUATION = "##"
UNKNOWN = "<unk>"
MAX_WORD_CHARS = 100


def is_punctuation(char: str) -> bool:
    """ASCII symbols and every Unicode punctuation category (P*)."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk(char: str) -> bool:
    """A CJK unified ideograph (the blocks BERT splits into single characters)."""
    cp = ord(char)
    return any(lo <= cp <= hi for lo, hi in (
        (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def clean(text: str) -> str:
    """NUL, U+FFFD and control characters removed; whitespace characters become spaces; CJK
    ideographs get spaces around them."""
    out = []
    for char in text:
        if char in "\t\n\r" or unicodedata.category(char) == "Zs":
            out.append(" ")
        elif char in "\x00\ufffd" or unicodedata.category(char).startswith("C"):
            continue
        else:
            out.append(f" {char} " if is_cjk(char) else char)
    return "".join(out)


def strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def basic_tokenize(text: str, lowercase: bool = True) -> List[str]:
    """Words and punctuation characters of ``text`` (lowercased and accent-stripped when
    ``lowercase``, as an uncased BERT vocabulary expects)."""
    tokens: List[str] = []
    for word in clean(text).split():
        if lowercase:
            word = strip_accents(word.lower())
        current = ""
        for char in word:
            if is_punctuation(char):
                tokens += [current, char] if current else [char]
                current = ""
            else:
                current += char
        if current:
            tokens.append(current)
    return tokens


def load_vocab(path: Path) -> List[str]:
    """The entries of a ``vocab.txt`` (one per line), in order; ValueError naming the line of a
    duplicate, and for a file without entries."""
    entries: List[str] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            entry = line.strip()
            if not entry:
                continue
            if entry in seen:
                raise ValueError(f"{path} line {number}: {entry!r} repeats line {seen[entry]}")
            seen[entry] = number
            entries.append(entry)
    if not entries:
        raise ValueError(f"{path} has no entries")
    return entries


class WordPiece:
    """Greedy longest-match-first WordPiece over a vocabulary."""

    def __init__(self, vocab: Iterable[str], lowercase: bool = True) -> None:
        self.vocab = set(vocab)
        self.lowercase = lowercase

    def word(self, word: str) -> List[str]:
        """The pieces of one word (``[UNKNOWN]`` when it cannot be cut)."""
        if len(word) > MAX_WORD_CHARS:
            return [UNKNOWN]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else CONTINUATION + word[start:end]
                if piece in self.vocab:
                    pieces.append(piece)
                    start = end
                    break
            else:
                return [UNKNOWN]
        return pieces

    def encode(self, text: str) -> str:
        """``text`` as space-separated pieces."""
        return " ".join(p for w in basic_tokenize(text, self.lowercase) for p in self.word(w))


def decode(pieces: str) -> str:
    """Pieces joined back into words: ``un ##aff ##able`` -> ``unaffable``."""
    return (" " + pieces).replace(" " + CONTINUATION, "").strip()


FAIRSEQ_SYMBOLS = ("<s>", "<pad>", "</s>", UNKNOWN)


def dictionary_entries(vocab: Sequence[str]) -> List[str]:
    """The vocabulary without its bracketed entries (``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``,
    ``[MASK]``, ``[unusedN]``) and fairseq's own symbols: a fairseq dictionary has its own
    padding, unknown, BOS and EOS symbols, and basic tokenisation never yields a bracketed word."""
    return [entry for entry in vocab if not (entry.startswith("[") and entry.endswith("]"))
            and entry not in FAIRSEQ_SYMBOLS]
