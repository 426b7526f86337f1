"""CLIP byte-level BPE tokenizer with SAM 3's settings (context 32, padding 0, lower-case cleaning).

Vocabulary (49,408 ids): the 256 byte symbols, the same 256 with the end-of-word marker ``</w>``,
the 48,894 merged strings in merge order, then start (49406) and end (49407) of text. It is read
either from the original ``bpe_simple_vocab_16e6.txt.gz`` merge list (packaged under ``sam3/assets``)
or from a Hugging Face ``vocab.json`` + ``merges.txt`` pair.

This is not an ``nn.Module``: it turns strings into a LongTensor (B, 32) on the CPU.
"""

from __future__ import annotations

import gzip
import html
import json
import os
from importlib import resources

import ftfy
import regex
import torch

END_OF_WORD = "</w>"
START_TEXT, END_TEXT = "<start_of_text>", "<end_of_text>"
# Hugging Face's CLIP files name the two special tokens differently.
HF_START_TEXT, HF_END_TEXT = "<|startoftext|>", "<|endoftext|>"
# The merge list is cut so that bytes + word-final bytes + merges + 2 specials = 49,408 ids.
NUM_MERGES = 49152 - 256 - 2
_BPE_CACHE_LIMIT = 100_000

# Pre-tokenisation: the special strings, English clitics, letter runs, single digits, and runs of
# anything else that is not white space.
_PIECES = regex.compile(
    f"{START_TEXT}|{END_TEXT}" + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def byte_encoder() -> dict[int, str]:
    """byte value -> a printable one-character stand-in; the dict's order is the vocabulary order.

    Printable Latin-1 bytes stand for themselves and come first (in byte order); the other bytes
    (controls, space, ...) follow in byte order, mapped to code points 256, 257, ...
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def clean_text(text: str) -> str:
    """ftfy repair, HTML entities decoded twice, white space runs collapsed to one space, lower case."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def default_bpe_path() -> str:
    return str(resources.files("sam3") / "assets" / "bpe_simple_vocab_16e6.txt.gz")


class Tokenizer:
    """Strings -> token ids (B, context_length), SOT + BPE ids + EOT, truncated (EOT kept last) and
    right-padded with 0.

    ``Tokenizer(bpe_path)`` reads the gzipped merge list; :meth:`from_hf_files` reads ``vocab.json`` +
    ``merges.txt``.
    """

    def __init__(self, bpe_path: str | os.PathLike | None = None, context_length: int = 32):
        with gzip.open(bpe_path or default_bpe_path(), "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]  # line 0 is a version header
        symbols = list(byte_encoder().values())
        vocab = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges] + [START_TEXT, END_TEXT]
        self._setup(dict(zip(vocab, range(len(vocab)))), merges, START_TEXT, END_TEXT, context_length)

    @classmethod
    def from_hf_files(
        cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike, context_length: int = 32
    ) -> "Tokenizer":
        """Build from a Hugging Face CLIP tokenizer's ``vocab.json`` (token -> id) and ``merges.txt``."""
        with open(vocab_json, encoding="utf-8") as fh:
            vocab = json.load(fh)
        with open(merges_txt, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        merges = [tuple(line.split()) for line in lines if line.strip()][:NUM_MERGES]
        start = HF_START_TEXT if HF_START_TEXT in vocab else START_TEXT
        end = HF_END_TEXT if HF_END_TEXT in vocab else END_TEXT
        self = cls.__new__(cls)
        self._setup(vocab, merges, start, end, context_length)
        return self

    def _setup(
        self, vocab: dict[str, int], merges: list[tuple[str, ...]], start: str, end: str, context_length: int
    ) -> None:
        self.encoder = vocab
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.byte_encoder = byte_encoder()
        self.sot_id = vocab[start]
        self.eot_id = vocab[end]
        # The special strings are recognised in the text under the original names whatever the files call them.
        self._special = {START_TEXT: self.sot_id, END_TEXT: self.eot_id}
        self.context_length = context_length
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def _merge(self, piece: str) -> list[str]:
        """Byte-symbol string -> BPE symbols: repeatedly join every occurrence (left to right) of the
        adjacent pair with the lowest merge rank, until no adjacent pair is a known merge."""
        word = list(piece[:-1]) + [piece[-1] + END_OF_WORD]
        while len(word) > 1:
            best, best_rank = None, None
            for pair in zip(word, word[1:]):
                rank = self.ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def _piece_ids(self, piece: str) -> list[int]:
        ids = self._cache.get(piece)
        if ids is None:
            if piece in self._special:
                ids = [self._special[piece]]
            else:
                symbols = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
                ids = [self.encoder[s] for s in self._merge(symbols)]
            if len(self._cache) >= _BPE_CACHE_LIMIT:
                self._cache.clear()
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """One string -> BPE ids, without start/end tokens or padding."""
        ids: list[int] = []
        for piece in _PIECES.findall(clean_text(text)):
            ids.extend(self._piece_ids(piece))
        return ids

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        """texts (B strings, or one) -> LongTensor (B, context_length)."""
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot_id
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out
