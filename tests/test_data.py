import re

import pytest
import torch

from charrnn import data
from charrnn.data import StreamBatches, fit_windows, read_corpus, spread_sample
from charrnn.errors import CharRNNError


def test_corpus_is_stored_as_one_byte_per_character_when_the_vocabulary_allows(tiny_corpus):
    corpus = read_corpus(tiny_corpus)
    assert corpus.ids.dtype == torch.uint8
    assert corpus.vocab.decode(corpus.ids.tolist()) == tiny_corpus.read_text()


def test_large_vocabularies_use_wider_integers(tmp_path):
    path = tmp_path / "cjk.txt"
    path.write_text("".join(chr(0x4E00 + i) for i in range(400)) * 3, encoding="utf-8")
    corpus = read_corpus(path)
    assert corpus.ids.dtype == torch.int16
    assert corpus.vocab.decode(corpus.ids.tolist()) == path.read_text(encoding="utf-8")


def test_vocabulary_order_is_stable_by_code_point(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("cab\nbé", encoding="utf-8")
    assert read_corpus(path).vocab.chars == ["\n", "a", "b", "c", "é"]


def test_non_utf8_error_names_the_byte_offset_and_the_way_out(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"hello caf\xe9 world")
    with pytest.raises(CharRNNError, match=r"byte 9;.*--encoding"):
        read_corpus(path)
    assert read_corpus(path, encoding="latin-1").vocab.decode(read_corpus(path, encoding="latin-1").ids.tolist()).endswith("café world")


@pytest.mark.parametrize("encoding", ["latin-2000", "utf\x008"])  # the second was a ValueError from codecs
def test_an_unknown_encoding_is_named(tmp_path, encoding):
    path = tmp_path / "t.txt"
    path.write_text("hello")
    with pytest.raises(CharRNNError, match="unknown --encoding"):
        read_corpus(path, encoding=encoding)


def test_byte_offset_is_right_across_read_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "READ_CHUNK_BYTES", 7)
    path = tmp_path / "t.txt"
    path.write_bytes("ééééé".encode() + b"ab\xffcd")  # 10 bytes of é, then the bad byte at 12
    with pytest.raises(CharRNNError, match="byte 12;"):
        read_corpus(path)


def test_multibyte_characters_split_across_chunks_decode(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "READ_CHUNK_BYTES", 3)
    path = tmp_path / "t.txt"
    path.write_text("añb€c😀d" * 5, encoding="utf-8")
    corpus = read_corpus(path)
    assert corpus.vocab.decode(corpus.ids.tolist()) == "añb€c😀d" * 5


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"abc\x00\x01\x02def", "binary")])
def test_empty_and_binary_files_are_refused(tmp_path, content, message):
    path = tmp_path / "f"
    path.write_bytes(content)
    with pytest.raises(CharRNNError, match=message):
        read_corpus(path)


def test_split_at_the_end_is_contiguous_with_validation_last(tiny_corpus):
    corpus = read_corpus(tiny_corpus)
    train, val = corpus.split(0.1, spread=False)
    assert torch.equal(torch.cat([train, val]), corpus.ids)
    assert len(val) == int(len(corpus.ids) * 0.1)


def test_spread_split_validates_on_pieces_across_the_text_and_trains_on_its_ends(tiny_corpus):
    corpus = read_corpus(tiny_corpus)
    corpus.ids = torch.arange(100_000)  # positions, to see where each character went
    train, val = corpus.split(0.05)
    assert len(val) == 5_000 and len(train) == 95_000
    assert sorted(torch.cat([train, val]).tolist()) == list(range(100_000))  # a partition of the text
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)  # order kept
    runs = (val[1:] != val[:-1] + 1).sum().item() + 1
    assert runs == data.VAL_PIECES
    assert val[0] > 0 and val[-1] < 99_999  # the text's start and end train
    assert all(k * 5_000 <= p < (k + 1) * 5_000 for k, p in enumerate(val[::250].tolist()))  # one per twentieth


def test_a_short_text_validates_on_fewer_longer_pieces(tiny_corpus):
    corpus = read_corpus(tiny_corpus)
    train, val = corpus.split(0.05)
    pieces = max(1, len(val) // data.MIN_VAL_PIECE)
    assert len(val) == int(len(corpus.ids) * 0.05) // pieces * pieces and len(train) + len(val) == len(corpus.ids)


def test_a_validation_fraction_that_leaves_no_text_is_refused(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij")
    with pytest.raises(CharRNNError, match=r"--val-fraction 0.05 leaves 10 training and 0 .* \(--val-fraction 0.2 does"):
        read_corpus(path).split(0.05)
    train, val = read_corpus(path).split(0.2)  # the advice works
    assert len(val) >= 2 and len(train) >= 2
    path.write_text("abc")
    with pytest.raises(CharRNNError, match="this text is too short: use a longer one"):
        read_corpus(path).split(0.05)


def test_each_window_continues_the_previous_one_row_by_row():
    ids = torch.arange(1000) % 251
    batches = StreamBatches(ids.to(torch.uint8), batch_size=4, seq_len=10)
    x0, y0 = batches.window(0)
    x1, _ = batches.window(1)
    assert torch.equal(x1[:, 0], y0[:, -1])  # row b of window 1 starts where row b of window 0 ended
    assert torch.equal(x0[:, 1:], y0[:, :-1])  # targets are inputs shifted by one
    assert torch.equal(x0[1], ids[250:260])  # rows are contiguous streams: row 1 starts at len/B


def test_ranks_share_the_global_batch_exactly():
    ids = (torch.arange(2000) % 200).to(torch.uint8)
    whole = StreamBatches(ids, 8, 16).window(3)[0]
    parts = [StreamBatches(ids, 8, 16, rank=r, world_size=2).window(3)[0] for r in range(2)]
    assert torch.equal(torch.cat(parts), whole)


def test_shuffled_segments_are_contiguous_and_carry_the_state_within_a_segment():
    ids = torch.arange(10_000)  # each id is its own position, so a window shows where it was read
    batches = StreamBatches(ids, batch_size=4, seq_len=10, segment_len=50)  # 5 windows per segment
    assert batches.shuffled and batches.segments == 199 and batches.windows_per_epoch == 199 * 5 / 4
    for step in range(260):  # past the end of the first pass, whose last round reads into the second pass's order
        x, y = batches.window(step)
        assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)
        assert torch.equal(x[:, -1] - x[:, 0], torch.full((4,), 9))  # each row is one contiguous run of text
        assert batches.starts_segment(step) == (step % 5 == 0)
        if not batches.starts_segment(step):  # within a segment, row b continues row b of the previous step
            assert torch.equal(x[:, 0], batches.window(step - 1)[1][:, -1])


def test_part_of_a_pass_samples_the_whole_text_and_each_pass_reads_each_segment_once():
    ids = torch.arange(100_001)  # 1,000 segments of 100 (and the last target)
    batches = StreamBatches(ids, batch_size=8, seq_len=10, segment_len=100)
    assert batches.windows_per_epoch == 1_000 * 10 / 8
    first = lambda epoch: [int(batches.window(epoch * 1_250 + k)[0][b, 0]) // 100  # noqa: E731
                           for k in range(0, 1_250, 10) for b in range(8)]
    one_pass = first(0)
    assert len(set(one_pass)) == len(one_pass) == 1_000  # no segment twice
    quarter = one_pass[: len(one_pass) // 4]
    assert min(quarter) < 100 and max(quarter) > 900  # a quarter of a pass already reads from all over the text
    assert first(1) != one_pass and sorted(first(1)) == sorted(one_pass)  # the same segments, in a new order
    same, other = (StreamBatches(ids, 8, 10, segment_len=100, seed=s).window(0)[0] for s in (0, 1))
    assert torch.equal(same, batches.window(0)[0]) and not torch.equal(other, same)  # the seed decides the order


def test_every_pass_reads_every_segment_when_the_streams_do_not_divide_the_segments():
    ids = torch.arange(20_001)  # 200 segments of 100 for 16 streams: 12.5 rounds a pass
    batches = StreamBatches(ids, batch_size=16, seq_len=10, segment_len=100, seed=5)
    assert batches.segments == 200 and batches.windows_per_epoch == 125
    read = [int(start) // 100 for step in range(0, 4 * 125, 10) for start in batches.window(step)[0][:, 0]]
    passes = [read[p * 200: (p + 1) * 200] for p in range(4)]
    for one_pass in passes:  # a pass that stopped at its last whole round left 8 of them unread
        assert sorted(one_pass) == list(range(200))
    assert len({tuple(one_pass) for one_pass in passes}) == 4  # each in its own order
    half_way = batches.window(12 * 10)[0][:, 0] // 100  # the round that straddles the first two passes
    assert half_way[:8].tolist() == passes[0][-8:] and half_way[8:].tolist() == passes[1][:8]
    parts = [StreamBatches(ids, 16, 10, segment_len=100, seed=5, rank=r, world_size=2).window(12 * 10 + 3)[0]
             for r in range(2)]  # the ranks still share that straddling round exactly
    assert torch.equal(torch.cat(parts), batches.window(12 * 10 + 3)[0])


def test_char_rnn_layout_is_kept_for_segment_len_0_and_for_text_too_short_to_shuffle():
    ids = torch.arange(1000)
    classic = StreamBatches(ids, batch_size=4, seq_len=10)
    short = StreamBatches(ids, batch_size=4, seq_len=10, segment_len=4096)  # a segment is longer than a stream
    for batches in (classic, short):
        assert not batches.shuffled and batches.windows_per_epoch == 24
        assert torch.equal(batches.window(3)[0][:, 0], torch.tensor([30, 280, 530, 780]))
        assert batches.starts_segment(24) and not batches.starts_segment(23)


def test_ranks_share_the_global_batch_of_shuffled_segments_exactly():
    ids = torch.arange(20_000)
    whole = StreamBatches(ids, 8, 16, segment_len=64, seed=3).window(77)[0]
    parts = [StreamBatches(ids, 8, 16, segment_len=64, seed=3, rank=r, world_size=2).window(77)[0] for r in range(2)]
    assert torch.equal(torch.cat(parts), whole)


def test_text_shorter_than_one_window_is_refused_with_settings_that_fit():
    for chars, batch_size, seq_len, fits in ((1000, 64, 128, "--batch-size 7 fits"), (100, 64, 128, "--batch-size 1 --seq-len 99 fits")):
        with pytest.raises(CharRNNError, match="lower them") as refused:
            StreamBatches(torch.zeros(chars, dtype=torch.uint8), batch_size=batch_size, seq_len=seq_len)
        assert fits in str(refused.value)
        advice = [int(n) for n in re.findall(r"(?:--batch-size|--seq-len) (\d+)", str(refused.value).split("(")[-1])]
        batches = StreamBatches(torch.zeros(chars, dtype=torch.uint8), advice[0], advice[1] if len(advice) > 1 else seq_len)
        assert batches.windows_per_epoch >= 1  # the advice works


def test_a_validation_sample_spreads_over_the_whole_split():
    ids = torch.arange(10_000)
    sample = spread_sample(ids, 1_000, pieces=10)
    assert len(sample) == 1_000 and len(set(sample.tolist())) == 1_000
    assert sample.min() == 0 and sample.max() >= 9_000  # from the split's start to its last tenth
    assert torch.equal(sample[:100], ids[:100]) and torch.equal(sample[100:200], ids[1_000:1_100])  # runs, evenly spaced
    assert torch.equal(spread_sample(ids[:500], 1_000), ids[:500])  # a short split is used whole


def test_a_text_too_short_for_the_default_windows_gets_fewer_streams_then_a_shorter_window():
    # 32 streams of one 65-character window need 2,080 characters: a 2,000-character poem has 1,900 to train on
    assert fit_windows(1_900, 32, 64) == (29, 64)
    assert fit_windows(1_900, 32, 64, processes=2) == (28, 64)  # each rank its share
    assert fit_windows(38, 32, 64) == (1, 37)
    # what the user set stays: the other one gives way, or the data's error names the fix
    assert fit_windows(1_900, 32, 64, lower_batch=False) == (32, 58)
    assert fit_windows(1_900, 32, 64, lower_seq_len=False) == (29, 64)
    assert fit_windows(38, 32, 64, lower_seq_len=False) == (1, 64)
    assert fit_windows(1_900, 32, 64, lower_batch=False, lower_seq_len=False) == (32, 64)
    for chars in (2, 65, 66, 500, 2_079, 2_080, 50_000):  # every fitted shape reads at least one window per stream
        batch, seq_len = fit_windows(chars, 32, 64)
        assert chars // batch >= seq_len + 1 and batch >= 1 and seq_len >= 1
        assert (batch, seq_len) == (32, 64) or chars < 2_080
