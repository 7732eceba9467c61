"""``--bpe wordpiece``: fairseq's subword hook for data prepared with a WordPiece vocabulary
(``scripts/prepare_seq2seq.sh --vocab bert``).  Decoding (``fairseq-generate``) joins ``##``
pieces and needs nothing else; encoding (``fairseq-interactive``) needs ``--wordpiece-vocab``.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fairseq.data.encoders import register_bpe
from fairseq.dataclass import FairseqDataclass

from .wordpiece import CONTINUATION, WordPiece, decode, load_vocab


@dataclass
class WordPieceConfig(FairseqDataclass):
    wordpiece_vocab: Optional[str] = field(
        default=None, metadata={"help": "the vocab.txt the data was prepared with (to encode)"}
    )
    wordpiece_cased: bool = field(
        default=False, metadata={"help": "keep case and accents (a cased vocabulary)"}
    )


@register_bpe("wordpiece", dataclass=WordPieceConfig)
class WordPieceBPE:
    def __init__(self, cfg: WordPieceConfig) -> None:
        self.cfg = cfg
        self.tokenizer: Optional[WordPiece] = None

    def encode(self, x: str) -> str:
        if self.tokenizer is None:
            if not self.cfg.wordpiece_vocab:
                raise ValueError("--bpe wordpiece needs --wordpiece-vocab FILE to encode text")
            vocab = load_vocab(Path(self.cfg.wordpiece_vocab))
            self.tokenizer = WordPiece(vocab, lowercase=not self.cfg.wordpiece_cased)
        return self.tokenizer.encode(x)

    def decode(self, x: str) -> str:
        return decode(x)

    def is_beginning_of_word(self, x: str) -> bool:
        return not x.startswith(CONTINUATION)
