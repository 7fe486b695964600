import os
import pickle
import random

import pytest
import torch

from charrnn import checkpoint
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN

from .conftest import tiny_config


def saved_model(path, **config):
    torch.manual_seed(0)
    model = CharRNN(tiny_config(**config))
    checkpoint.save(path, {"model_config": model.config.to_dict(), "vocab": [chr(97 + i) for i in range(29)],
                           "model": model.state_dict()})
    return model


def test_round_trip_gives_identical_logits(tmp_path):
    model = saved_model(tmp_path / "m.pt").eval()
    loaded, _ = checkpoint.restore_model(checkpoint.load(tmp_path / "m.pt"))
    ids = torch.randint(0, 29, (2, 9))
    assert torch.equal(model(ids)[0], loaded(ids)[0])


@pytest.mark.parametrize("skip", [True, False])
def test_an_odd_embedding_loads_padded_to_even_and_computes_the_same(tmp_path, skip):
    # checkpoints from before session 32 embed in the alphabet's size, often odd: oneDNN's bf16 slow path on AMX
    model = saved_model(tmp_path / "m.pt", embedding=7, layers=3, skip=skip).eval()
    loaded, _ = checkpoint.restore_model(checkpoint.load(tmp_path / "m.pt"))
    assert loaded.config.embedding == 8 and loaded.embed.weight.shape == (29, 8)
    assert [layer.input_size for layer in loaded.layers] == ([8, 24, 24] if skip else [8, 16, 16])
    ids = torch.randint(0, 29, (2, 9))
    assert torch.allclose(model(ids)[0], loaded(ids)[0], atol=1e-6)


def test_checkpoint_loads_with_weights_only(tmp_path):
    saved_model(tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["format_version"] == checkpoint.FORMAT_VERSION


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    saved_model(path)
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CharRNNError, match="no space left.*the previous m.pt is intact"):
        saved_model(path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_a_failed_first_write_says_that_nothing_was_written(tmp_path, monkeypatch):
    def full_disk(obj, f, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CharRNNError, match="no space left.*no m.pt was written") as error:
        saved_model(tmp_path / "m.pt")
    assert "intact" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model_config": {}, "vocab": [], "model": {}, "x": Payload(str(marker))}, path)
    with pytest.raises(CharRNNError, match="refused"):
        checkpoint.load(path)
    assert not marker.exists()


def test_a_plain_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(CharRNNError):
        checkpoint.load(path)
    assert not marker.exists()


def test_truncated_checkpoints_give_a_clear_error(tmp_path):
    path = tmp_path / "m.pt"
    saved_model(path)
    data = path.read_bytes()
    rng = random.Random(0)
    for cut in sorted(rng.sample(range(1, len(data)), 12)):
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        with pytest.raises(CharRNNError, match="cut.pt"):
            checkpoint.load(tmp_path / "cut.pt")


def test_a_broken_checkpoint_points_to_its_runs_other_one(tmp_path):
    for broken, other in (("best.pt", "--checkpoint " + str(tmp_path / "latest.pt")), ("latest.pt", "copy it over latest.pt")):
        (tmp_path / broken).write_bytes(b"PK\x03\x04 cut short")
        with pytest.raises(CharRNNError, match="truncated") as refused:
            checkpoint.load(tmp_path / broken)
        assert other in str(refused.value)


def test_random_bytes_give_a_clear_error(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(os.urandom(5000))
    with pytest.raises(CharRNNError, match="not a charrnn checkpoint"):
        checkpoint.load(path)


def test_a_newer_format_version_asks_for_an_upgrade(tmp_path):
    torch.save({"format_version": checkpoint.FORMAT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(CharRNNError, match="upgrade charrnn"):
        checkpoint.load(tmp_path / "new.pt")


def test_a_missing_checkpoint_says_how_to_get_one(tmp_path):
    with pytest.raises(CharRNNError, match="charrnn train"):
        checkpoint.load(tmp_path / "nope.pt")


def test_a_run_directory_means_its_best_checkpoint(tmp_path):
    saved_model(tmp_path / "latest.pt")
    assert checkpoint.resolve(tmp_path) == tmp_path / "latest.pt"
    saved_model(tmp_path / "best.pt")
    assert checkpoint.resolve(tmp_path) == tmp_path / "best.pt"


def test_a_second_writer_is_refused_by_the_run_lock(tmp_path):
    with checkpoint.RunLock(tmp_path):
        with pytest.raises(CharRNNError, match="another charrnn train"):
            with checkpoint.RunLock(tmp_path):
                pass
    with checkpoint.RunLock(tmp_path):  # released on exit
        pass


def test_atomic_writes_give_files_the_mode_a_plain_open_would(tmp_path):
    from charrnn import files

    umask = os.umask(0o022)
    try:
        files.atomic_write_text(tmp_path / "new.txt", "x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644  # shareable, as `open(..., "w")` makes it
        (tmp_path / "kept.txt").write_text("old")
        (tmp_path / "kept.txt").chmod(0o600)
        files.atomic_write_text(tmp_path / "kept.txt", "new")
        assert (tmp_path / "kept.txt").stat().st_mode & 0o777 == 0o600  # overwriting keeps the file's mode
    finally:
        os.umask(umask)


def test_an_output_that_is_a_fifo_or_a_symlink_is_written_through_not_replaced(tmp_path):
    # as root, `charrnn corpus build cpp -o /dev/null` renamed a regular file over the device; a FIFO shows the same
    import stat
    import threading

    from charrnn import files

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    files.atomic_write_text(fifo, "through the pipe")
    reader.join(timeout=30)
    assert received == [b"through the pipe"] and stat.S_ISFIFO(fifo.stat().st_mode)
    assert list(tmp_path.iterdir()) == [fifo]  # no temporary left beside it
    target, link = tmp_path / "target.html", tmp_path / "link.html"
    target.write_text("old")
    link.symlink_to(target)
    files.atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
