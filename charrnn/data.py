"""Corpus text to compact id tensors (streamed, with clear decoding errors), the train/val split, and batches."""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from charrnn.errors import CharRNNError
from charrnn.files import STDIN, input_file, shown_name
from charrnn.vocab import Vocab, printable

READ_CHUNK_BYTES = 8 << 20


ENCODING_FIX = "pass --encoding latin-1 (or the file's real encoding)"


def iter_code_points(path: Path, encoding: str = "utf-8") -> Iterator[tuple[torch.Tensor, bytes]]:
    """Yield (code points as int32, raw bytes) per chunk, in bounded memory. Errors name the byte offset."""
    for text, raw in _iter_decoded(path, encoding, ENCODING_FIX):
        yield torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32), raw


def read_text(path: Path, *, max_chars: int | None = None, encoding: str = "utf-8",
              fix: str = "save it as UTF-8") -> str:
    """A whole text file (or its first max_chars characters) as a str; a decoding error names the byte offset
    and `fix`, what the user can do about it."""
    parts, count = [], 0
    for text, _ in _iter_decoded(Path(path), encoding, fix):
        parts.append(text)
        count += len(text)
        if max_chars is not None and count >= max_chars:
            break
    return "".join(parts)[:max_chars]


def _iter_decoded(path: Path, encoding: str, fix: str) -> Iterator[tuple[str, bytes]]:
    """(decoded text, raw bytes) per 8 MB chunk, a character split across chunks decoded whole."""
    input_file(path)
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    except (LookupError, ValueError):  # ValueError: a name with a NUL in it
        raise CharRNNError(f"unknown --encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1") from None
    offset = 0
    with contextlib.nullcontext(sys.stdin.buffer) if path == STDIN else open(path, "rb") as f:
        while True:
            raw = f.read(READ_CHUNK_BYTES)
            pending = len(decoder.getstate()[0])  # bytes of a character split across the previous chunk boundary
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                where = offset - pending + e.start
                raise CharRNNError(f"{shown_name(path)}: not valid {encoding} at byte {where}; {fix}") from None
            if "\x00" in text:
                at = offset + len(text[: text.index("\x00")].encode(encoding, errors="replace"))
                raise CharRNNError(f"{shown_name(path)}: contains a NUL byte near byte {at}; this looks like a binary file, "
                                   "pass a text file")
            if text:
                yield text, raw
            if not raw:
                return
            offset += len(raw)


@dataclass
class Corpus:
    """A text as ids: `ids` is a compact 1-D integer tensor (uint8 when the vocabulary allows)."""

    name: str
    path: Path
    fingerprint: str
    vocab: Vocab
    ids: torch.Tensor

    def split(self, val_fraction: float, *, spread: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(training ids, validation ids): val_fraction of the text validates, the rest trains.

        spread: the validation text is VAL_PIECES equal pieces, each in the middle of its share of the text,
        so that it stands for the whole text and the text's end still trains: the end is what lies nearest to
        whatever comes after the file (on tinyshakespeare, training on it took the next plays from 2.362 to 2.121
        bits/char at the same compute: bench/QUALITY.md, "Where validation comes from").
        Otherwise (runs from before this choice, or --val-split end): the text's end validates.
        """
        n = len(self.ids)
        n_val = int(n * val_fraction)
        if n_val < 2 or n - n_val < 2:
            fits = _fitting_val_fraction(n)
            raise CharRNNError(
                f"--val-fraction {val_fraction} leaves {n - n_val} training and {n_val} validation characters "
                f"of {n}; choose a fraction that leaves both at least 2 "
                + (f"(--val-fraction {fits:g} does for this text)" if fits else "(this text is too short: use a longer one)")
            )
        if not spread:
            return self.ids[: n - n_val], self.ids[n - n_val:]
        pieces = min(VAL_PIECES, max(1, n_val // MIN_VAL_PIECE))
        stride, piece = n // pieces, n_val // pieces
        starts = [k * stride + (stride - piece) // 2 for k in range(pieces)]
        val = torch.cat([self.ids[a: a + piece] for a in starts])
        train = torch.cat([self.ids[a: b] for a, b in zip([0] + [a + piece for a in starts], starts + [n])])
        return train, val


VAL_PIECES = 20
MIN_VAL_PIECE = 100  # characters; a shorter text validates on fewer, longer pieces


def read_corpus(path: Path, *, name: str | None = None, encoding: str = "utf-8", vocab: Vocab | None = None) -> Corpus:
    """Read a corpus in two passes (vocabulary and fingerprint, then ids), never holding it as Python ints.

    With `vocab` given (resuming, or training further on new text) every character must be in it.
    """
    digest = hashlib.sha256()
    seen: torch.Tensor | None = None
    count = 0
    for code_points, raw in iter_code_points(path, encoding):
        digest.update(raw)
        uniq = torch.unique(code_points)
        seen = uniq if seen is None else torch.unique(torch.cat([seen, uniq]))
        count += len(code_points)
    if seen is None:
        raise CharRNNError(f"{path}: the file is empty; pass a file with text in it")
    text_vocab = Vocab.from_code_points(seen)
    if vocab is None:
        vocab = text_vocab
    else:
        missing = [c for c in text_vocab.chars if c not in vocab]
        if missing:
            raise CharRNNError(
                f"{path}: has {len(missing)} character(s) the model's vocabulary lacks ({printable(missing[:10])}); "
                "the vocabulary differs, so this model cannot train on it: start a new run instead"
            )
    ids = torch.empty(count, dtype=vocab.id_dtype)
    at = 0
    for code_points, _ in iter_code_points(path, encoding):
        ids[at: at + len(code_points)] = vocab.lookup(code_points).to(vocab.id_dtype)
        at += len(code_points)
    return Corpus(name=name or path.stem, path=path, fingerprint=digest.hexdigest(), vocab=vocab, ids=ids)


KNOWN_SEEDS = {"cpp": "void ", "python": "def "}  # the built-in corpora's natural openings


def suggest_seed(corpus_name: str, path: Path | None) -> str:
    """A seed that suits the corpus, for samples during training and the exported page: a built-in corpus's
    natural opening, else the first word of the text's first non-blank line (with its trailing space)."""
    if corpus_name in KNOWN_SEEDS:
        return KNOWN_SEEDS[corpus_name]
    try:
        head = read_text(path, max_chars=4096) if path is not None else ""
    except (CharRNNError, OSError):
        return ""
    for line in head.splitlines():
        if line.strip():
            indent = line[: len(line) - len(line.lstrip())]
            word = line.strip().split(" ")[0]
            return indent + word + (" " if " " in line.strip() else "")
    return ""


def spread_sample(ids: torch.Tensor, max_chars: int, pieces: int = 16) -> torch.Tensor:
    """At most max_chars of ids, as `pieces` equal runs spaced evenly over all of it, so that a validation
    sample stands for the whole split: a split's first stretch alone can differ much from the rest (cpp's
    does; bench/RESULTS.md, session 3)."""
    if len(ids) <= max_chars:
        return ids
    piece, stride = max_chars // pieces, len(ids) // pieces
    return torch.cat([ids[k * stride: k * stride + piece] for k in range(pieces)])


def fingerprint_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _fitting_val_fraction(chars: int) -> float | None:
    """The smallest fraction in hundredths that leaves `chars` characters at least 2 to validate and 2 to train, if any
    does (a 21-character text: 0.1)."""
    return next((k / 100 for k in range(1, 100) if 2 <= int(chars * (k / 100)) <= chars - 2), None)


def _stream_windows(chars: int, batch_size: int, seq_len: int) -> int:
    """Whole windows in one stream's slice of `chars` characters (a window's targets reach one character further)."""
    return (chars // batch_size - 1) // seq_len


def fit_windows(chars: int, batch_size: int, seq_len: int, *, lower_batch: bool = True, lower_seq_len: bool = True,
                processes: int = 1) -> tuple[int, int]:
    """--batch-size and --seq-len for `chars` training characters: as given where one window of every stream fits
    the text; else the batch lowered (where `lower_batch`; to a multiple of the processes) until every stream has a
    window, and where one stream per process has none, the window shortened to the text (where `lower_seq_len`).
    A poem of 2,000 characters is too short for 32 windows of 65 at the defaults. The plan fits what the user left
    to it; StreamBatches' error names the fit of both."""
    if _stream_windows(chars, batch_size, seq_len) >= 1:
        return batch_size, seq_len
    if lower_batch:
        batch_size = max(processes, chars // (seq_len + 1) // processes * processes)
    if lower_seq_len and _stream_windows(chars, batch_size, seq_len) < 1:
        seq_len = max(1, chars // batch_size - 1)
    return batch_size, seq_len


def reads_in_segments(chars: int, batch_size: int, seq_len: int, segment_len: int) -> bool:
    """Whether StreamBatches deals `chars` characters in shuffled segments of `segment_len`, not char-rnn's layout.

    A segment must be whole windows and shorter than one stream's slice of the text; otherwise there is nothing to
    shuffle, and the streams read char-rnn's slices.
    """
    return 0 < segment_len // seq_len < _stream_windows(chars, batch_size, seq_len)


class StreamBatches:
    """B parallel streams of the text cut into windows of seq_len; each stream's hidden state carries from one
    window to its next (truncated BPTT).

    segment_len=0 is char-rnn's layout: the text is cut into B slices and stream b reads slice b from start to
    end, every pass in the same order. With the text a b c ... x and B=4, each stream is a row:

        ┌ a b c d e f ┐   window 0 = columns 0..T-1 (inputs), 1..T (targets)
        │ g h i j k l │   window 1 = the next T columns, so row b of window w+1
        │ m n o p q r │   continues row b of window w.
        └ s t u v w x ┘

    A run that stops within its first pass has then read only the start of each slice, and a corpus made of
    many kinds of text (the built-in ones: one library after another) is sampled unevenly. With segment_len
    > 0 the text is cut into segments of that many characters (whole windows), and each pass deals them to
    the streams in a fresh order drawn from `seed` and the pass number: a stream reads a segment window by
    window, then starts its next segment from a zero state. A part of a pass then samples the whole text, and
    passes differ in order. The passes' orders follow one another without a break: a round of B segments that
    runs past the end of one pass takes the rest from the next pass's order, so each pass reads every segment once
    (a pass that dropped its last, partial round left up to B - 1 segments unread: 16% of a 200,000-character
    text at 1,024-character segments). A pass is then `windows_per_epoch` steps, not always a whole number. A text
    too short to give every stream more than one segment falls back to char-rnn's layout (`reads_in_segments`,
    which the plan asks too).

    Window w of a pass is a pure function of the step (and seed), so resuming needs only the step number.
    Under torchrun each rank takes its own block of rows; together the ranks see exactly the global batch.
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, seq_len: int, *, segment_len: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise CharRNNError(f"--batch-size {batch_size} must be divisible by the number of processes ({world_size})")
        stream_len = len(ids) // batch_size
        stream_windows = _stream_windows(len(ids), batch_size, seq_len)
        if stream_windows < 1:
            streams, window = fit_windows(len(ids), batch_size, seq_len)
            fits = f"--batch-size {streams}" + (f" --seq-len {window}" if window != seq_len else "")
            raise CharRNNError(
                f"the training text ({len(ids):,} characters) is shorter than one window of "
                f"--batch-size {batch_size} x (--seq-len {seq_len} + 1); lower them ({fits} fits this text), or use more text"
            )
        self.shuffled = reads_in_segments(len(ids), batch_size, seq_len, segment_len)
        if self.shuffled:
            self.segment_windows = segment_len // seq_len
            self.stride = self.segment_windows * seq_len  # segment k starts at k x stride
            self.segments = (len(ids) - 1) // self.stride
        else:
            self.segment_windows, self.stride, self.segments = stream_windows, stream_len, batch_size
        self.windows_per_epoch = self.segments * self.segment_windows / batch_size  # steps per pass
        rows = batch_size // world_size
        self._row_slots = torch.arange(rank * rows, (rank + 1) * rows)  # this rank's places in a round of B segments
        self.batch_size = rows
        self.global_batch = batch_size
        self.seq_len = seq_len
        self._offsets = torch.arange(seq_len + 1)  # a window's positions after its start, built once
        self.seed = seed
        self.ids = ids
        self._orders: dict[int, torch.Tensor] = {}  # pass -> the order its segments are read in (two at most)

    def order(self, epoch: int) -> torch.Tensor:
        """The segments in the order pass `epoch` reads them: the passes' orders, one after another, are dealt
        B at a time, round r giving stream b the (r·B + b)-th."""
        if epoch not in self._orders:
            if self.shuffled:
                # modulo 2**64: a seed past about 2**43 overflowed the generator's range (the same value below it)
                generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**64)
                self._orders[epoch] = torch.randperm(self.segments, generator=generator)
            else:
                self._orders[epoch] = torch.arange(self.segments)
            while len(self._orders) > 2:  # a round spans at most two passes: keep the two drawn last
                del self._orders[next(iter(self._orders))]
        return self._orders[epoch]

    def segments_read(self, round_: int) -> torch.Tensor:
        """The segment each of this rank's streams reads in round `round_` (a round is segment_windows steps)."""
        slots = round_ * self.global_batch + self._row_slots  # places in the passes' orders laid end to end
        epochs, places = slots // self.segments, slots % self.segments
        first, last = int(epochs[0]), int(epochs[-1])
        if first == last:
            return self.order(first)[places]
        return torch.where(epochs == first, self.order(first)[places], self.order(last)[places])

    def window(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets, each (B_local, T) int64, for a global step."""
        round_, w = divmod(step, self.segment_windows)
        starts = self.segments_read(round_) * self.stride + w * self.seq_len
        chunk = self.ids[starts.unsqueeze(1) + self._offsets].long()
        return chunk[:, :-1], chunk[:, 1:]

    def starts_segment(self, step: int) -> bool:
        """Whether every stream starts new text at this step (so its state starts from zeros)."""
        return step % self.segment_windows == 0


def iter_known_ids(path: Path, vocab: Vocab, *, strict: bool = False,
                   encoding: str = "utf-8") -> Iterator[tuple[torch.Tensor, int]]:
    """A file as chunks of ids in `vocab`, with the count of unknown characters skipped in each chunk.

    With strict, an unknown character is an error naming it. An empty file, or one with no known
    characters, is an error.
    """
    any_text = any_known = False
    for code_points, _ in iter_code_points(path, encoding):
        any_text = True
        ids = vocab.lookup(code_points)
        known = ids >= 0
        unknown = int((~known).sum())
        if unknown and strict:
            missing = sorted({chr(int(c)) for c in code_points[~known].unique().tolist()})
            raise CharRNNError(f"{shown_name(path)}: {len(missing)} character(s) not in the model's vocabulary "
                               f"({printable(missing[:10])}); drop --strict to skip them")
        ids = ids[known].to(vocab.id_dtype)
        any_known = any_known or len(ids) > 0
        yield ids, unknown
    if not any_text:
        raise CharRNNError(f"{shown_name(path)}: the file is empty; pass a file with text in it")
    if not any_known:
        raise CharRNNError(f"{shown_name(path)}: none of its characters are in the model's vocabulary; "
                           "evaluate text in the alphabet the model was trained on")
