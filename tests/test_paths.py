"""Every path option, given a folder, a file, a missing parent and a place nothing can be written: either it works
as a user would expect, or one clear stderr line and exit 1, never a traceback."""

from pathlib import Path

import pytest

from charrnn.cli import app
from charrnn.files import PAGE_MARK

UNWRITABLE = "/proc/charrnn-test/x"  # /proc takes no new files, even for root


@pytest.fixture
def places(tmp_path, tiny_corpus):
    folder = tmp_path / "folder"
    folder.mkdir()
    return {"folder": folder, "file": tiny_corpus, "missing_parent": tmp_path / "no" / "such" / "x",
            "unwritable": Path(UNWRITABLE)}


def one_line_error(result, *words):
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


TRAIN = ["--hidden", "8", "--embedding", "4", "--steps", "2", "--seq-len", "8", "--batch-size", "2", "--quiet",
         "--precision", "fp32"]


@pytest.mark.parametrize("place, works", [("folder", True), ("file", False), ("missing_parent", True),
                                          ("unwritable", False)])
def test_train_out(runner, places, tiny_corpus, place, works):
    result = runner.invoke(app, ["train", str(tiny_corpus), *TRAIN, "--out", str(places[place])])
    if works:
        assert result.exit_code == 0, result.stderr
        assert (places[place] / "latest.pt").is_file()
    else:
        one_line_error(result, "--out", str(places[place]))


@pytest.mark.parametrize("place", ["folder", "missing_parent", "unwritable"])
def test_train_corpus_argument(runner, places, place):
    one_line_error(runner.invoke(app, ["train", str(places[place]), *TRAIN]), str(places[place]))


@pytest.mark.parametrize("command", [["sample", "-n", "3", "--checkpoint"], ["eval", "--checkpoint"], ["info"]])
@pytest.mark.parametrize("place", ["folder", "file", "missing_parent", "unwritable"])
def test_checkpoint_options(runner, places, command, place):
    one_line_error(runner.invoke(app, [*command, str(places[place])]), str(places[place]))


@pytest.mark.parametrize("place, works", [("folder", True), ("file", False), ("missing_parent", True),
                                          ("unwritable", False)])
def test_sample_out_dir(runner, places, memorised_run, place, works):
    result = runner.invoke(app, ["sample", "-c", str(memorised_run), "-n", "5", "--out-dir", str(places[place])])
    if works:
        assert result.exit_code == 0, result.stderr
        assert (places[place] / "sample-001.txt").is_file()
    else:
        one_line_error(result, "--out-dir", str(places[place]))


@pytest.mark.parametrize("place", ["folder", "missing_parent", "unwritable"])
def test_sample_seed_file(runner, places, memorised_run, place):
    result = runner.invoke(app, ["sample", "-c", str(memorised_run), "--seed-file", str(places[place])])
    one_line_error(result, "--seed-file", str(places[place]))


@pytest.mark.parametrize("command", [["eval", "-c"], ["show", "-c"]])
@pytest.mark.parametrize("place", ["folder", "missing_parent", "unwritable"])
def test_text_file_arguments(runner, places, memorised_run, command, place):
    result = runner.invoke(app, [command[0], str(places[place]), *command[1:], str(memorised_run)])
    one_line_error(result, str(places[place]))


@pytest.mark.parametrize("command, name", [(["info", "{run}", "--plot"], "chart.svg"),
                                           (["show", "{text}", "-c", "{run}", "--out"], "page.html"),
                                           (["corpus", "build", "cpp", "--out"], "corpus.txt")])
@pytest.mark.parametrize("place, works", [("folder", False), ("file", True), ("missing_parent", True),
                                          ("unwritable", False)])
def test_output_files(runner, places, memorised_run, tiny_corpus, monkeypatch, command, name, place, works):
    from charrnn import corpora

    monkeypatch.setattr(corpora, "build", lambda _: tiny_corpus)  # the real cpp corpus takes a while to assemble
    target = places[place]
    if place == "file":
        target = target.with_name(name)
        target.write_text(f"old {PAGE_MARK}")  # a page charrnn wrote: show may replace it without --force
    elif place != "folder":
        target = target.with_name(name)
    args = [a.format(run=memorised_run, text=tiny_corpus) for a in command]
    result = runner.invoke(app, [*args, str(target)])
    if works:
        assert result.exit_code == 0, result.stderr
        assert target.is_file() and target.read_text() != f"old {PAGE_MARK}"
    else:
        one_line_error(result, str(target))


@pytest.mark.parametrize("command", [["show", "{text}", "-c", "{run}"], ["export", "{run}"]])
def test_a_page_replaces_only_a_page_charrnn_wrote_unless_forced(runner, memorised_run, tiny_corpus, tmp_path, command):
    # show's default is page.html, export's <run>.html: names a user's own file may have
    target = tmp_path / "page.html"
    target.write_text("<html>my own page</html>")
    args = [a.format(run=memorised_run, text=tiny_corpus) for a in command] + ["-o", str(target)]
    one_line_error(runner.invoke(app, args), str(target), "--force")
    assert target.read_text() == "<html>my own page</html>"
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0 and PAGE_MARK in target.read_text()
    again = runner.invoke(app, args)  # now charrnn's own page: writing it again needs no --force
    assert again.exit_code == 0, again.stderr
