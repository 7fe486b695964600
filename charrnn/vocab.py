"""The vocabulary: a corpus's distinct characters in a stable order (by code point), and id <-> text."""

from __future__ import annotations

import torch

from charrnn.errors import CharRNNError

MAX_CODE_POINT = 0x10FFFF


def printable(chars) -> str:
    """Characters as a user can read them in an error line: repr() shows newlines, tabs and odd spaces."""
    return " ".join(repr(c) for c in chars)


class Vocab:
    def __init__(self, chars: list[str]):
        if not chars:
            raise CharRNNError("the vocabulary is empty: the text has no characters")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise CharRNNError("a vocabulary must list distinct single characters")
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}
        # code point -> id lookup table (-1 for unknown), built lazily: it costs 4.4 MB.
        self._table: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: str) -> bool:
        return char in self.index

    @classmethod
    def from_code_points(cls, code_points: torch.Tensor) -> Vocab:
        return cls([chr(int(c)) for c in torch.unique(code_points).tolist()])

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls(sorted(set(text)))

    def to_list(self) -> list[str]:
        return list(self.chars)

    @classmethod
    def from_list(cls, chars: list[str]) -> Vocab:
        return cls(chars)

    @property
    def id_dtype(self) -> torch.dtype:
        """The smallest integer type that holds every id: a corpus costs 1 byte per char when it can."""
        if len(self) <= 256:
            return torch.uint8
        return torch.int16 if len(self) <= 32767 else torch.int32

    def table(self) -> torch.Tensor:
        if self._table is None:
            table = torch.full((MAX_CODE_POINT + 1,), -1, dtype=torch.int32)
            table[torch.tensor([ord(c) for c in self.chars], dtype=torch.long)] = torch.arange(len(self), dtype=torch.int32)
            self._table = table
        return self._table

    def lookup(self, code_points: torch.Tensor) -> torch.Tensor:
        """Code points (int32) -> ids (int32), -1 where a character is not in the vocabulary."""
        return self.table()[code_points.long()]

    def unknown(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self.index})

    def encode(self, text: str, *, drop_unknown: bool = False) -> list[int]:
        missing = self.unknown(text)
        if missing and not drop_unknown:
            raise CharRNNError(
                f"{len(missing)} character(s) not in the model's vocabulary: {printable(missing[:20])}; "
                "remove them or pass --drop-unknown"
            )
        return [self.index[c] for c in text if c in self.index]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)
