"""`charrnn export`: one self-contained page that writes like the model (checked in headless Chromium where it can be
installed), asks no network for anything, and escapes what it shows."""

import html
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

import charrnn
from charrnn.cli import app
from charrnn.config import Cell
from charrnn.training import ModelOptions, run

from .conftest import TINY_TEXT, tiny_job


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


needs_chromium = pytest.mark.skipif(chromium() is None, reason="no headless Chromium installed (CI installs Debian's chromium)")


def open_page(page: Path, fragment: str, tmp_path: Path, *extra: str) -> str:
    """The page's DOM after its scripts ran (virtual time lets every chunk of generation run)."""
    result = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=60000", *extra,
                             "--dump-dom", page.as_uri() + "#" + fragment],
                            capture_output=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.decode("utf-8")  # not text=True, whose universal newlines would turn the page's \r\n into \n


def generated_text(dom: str) -> str:
    match = re.search(r'<span class="text">(.*?)</span>', dom, re.S)
    assert match, dom[-2000:]
    return html.unescape(match.group(1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Four small trained models: an LSTM and a GRU with skips, an LSTM without, and an ensemble of three LSTMs."""
    root = tmp_path_factory.mktemp("export")
    corpus = root / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    runs = {}
    for name, cell, skip, members in (("lstm", Cell.LSTM, True, 1), ("gru", Cell.GRU, True, 1),
                                      ("noskip", Cell.LSTM, False, 1), ("ensemble", Cell.LSTM, True, 3)):
        job = tiny_job(corpus, root / name, steps=60, lr=1e-2)
        run(replace(job, model=ModelOptions(cell=cell, skip=skip, hidden=32, embedding=8, members=members)))
        runs[name] = root / name
    return runs


def test_the_page_is_self_contained_and_asks_for_nothing(memorised_run):
    page = charrnn.load(memorised_run, device="cpu").export_html()
    for marker in ("http:", "https:", "src=", "href=", "fetch(", "XMLHttpRequest", "import(", "WebSocket"):
        assert marker not in page, marker
    assert "default-src 'none'" in page  # the browser itself refuses any request the page might try


def test_int8_is_smallest_and_scores_within_a_hundredth_of_a_bit(memorised_run, tmp_path):
    model = charrnn.load(memorised_run, device="cpu")
    sizes = {w: len(model.export_html(weights=w)) for w in ("fp32", "fp16", "int8")}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]
    text = tmp_path / "text.txt"
    text.write_text(TINY_TEXT[:600])
    exact = model.evaluate(text).bits_per_char
    assert model.rounded("fp32").evaluate(text).bits_per_char == exact
    assert abs(model.rounded("int8").evaluate(text).bits_per_char - exact) < 0.01


def test_what_the_page_shows_is_escaped(memorised_run):
    model = charrnn.load(memorised_run, device="cpu")
    page = model.export_html(title="<b>x</b></script>", seed="</script><img onerror=alert(1)>")
    assert "<b>x</b>" not in page and "</script><img" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page  # the <title>; the body sets textContent, never innerHTML
    assert "innerHTML" not in page


def test_export_writes_the_page_and_names_its_size(runner, memorised_run, tmp_path):
    out = tmp_path / "m.html"
    result = runner.invoke(app, ["export", str(memorised_run), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.is_file() and "MB, int8 weights" in result.stderr and result.stdout == ""
    bad = runner.invoke(app, ["export", str(memorised_run), "--weights", "int4", "--out", str(out)])
    assert bad.exit_code == 1 and "int4" in bad.stderr and "fp32, fp16, int8" in bad.stderr


@needs_chromium
@pytest.mark.parametrize("name", ["lstm", "gru", "noskip", "ensemble"])
def test_the_pages_greedy_text_is_the_python_apis_on_the_same_weights(trained, tmp_path, name):
    model = charrnn.load(trained[name], device="cpu")
    page = tmp_path / "m.html"
    page.write_text(model.export_html(weights="int8"))
    dom = open_page(page, "seed=the%20&temperature=0&length=300&run=1", tmp_path)
    expected = model.rounded("int8").generate("the ", length=300, temperature=0, echo=False)
    assert generated_text(dom) == expected


@needs_chromium
def test_an_ensembles_page_writes_with_its_first_members_as_sample_members_does(trained, tmp_path):
    """The page holds every member; its "members" box keeps the first K, as `sample --members K` (out of range:
    the nearest of 1 and all)."""
    model = charrnn.load(trained["ensemble"], device="cpu")
    page = tmp_path / "m.html"
    page.write_text(model.export_html(weights="int8"))
    for members, kept in (("2", 2), ("0", 1)):
        dom = open_page(page, f"seed=the%20&temperature=0&length=300&run=1&members={members}", tmp_path)
        expected = model.first_members(kept).rounded("int8").generate("the ", length=300, temperature=0, echo=False)
        assert generated_text(dom) == expected
    assert expected != model.rounded("int8").generate("the ", length=300, temperature=0, echo=False)  # K matters
    assert re.search(r'<label id="members_label">', dom)  # shown for an ensemble (hidden for one network)


@needs_chromium
def test_the_page_writes_characters_beyond_ascii_as_python_does(tmp_path):
    """Emoji are two UTF-16 units in JavaScript; CJK, tabs and CRLF line ends must come through as well."""
    corpus = tmp_path / "u.txt"
    corpus.write_text("日本😀 tab\there\r\n🚀 é " * 200, encoding="utf-8", newline="")
    run(tiny_job(corpus, tmp_path / "u", steps=120, lr=1e-2))
    model = charrnn.load(tmp_path / "u", device="cpu")
    page = tmp_path / "u.html"
    page.write_text(model.export_html(weights="int8"))
    dom = open_page(page, "seed=%F0%9F%9A%80%20&temperature=0&length=200&run=1", tmp_path)  # seed "🚀 "
    expected = model.rounded("int8").generate("🚀 ", length=200, temperature=0, echo=False)
    assert "😀" in expected and "日" in expected and "\t" in expected  # the model learned the pattern
    assert generated_text(dom) == expected


def page_requests(page: Path, fragment: str, tmp_path: Path) -> list[str]:
    """URLs the page itself asked for, from Chromium's network log. The browser's own background requests
    (time, updates) carry the initiator "not an origin"; a page opened from disk asks as origin "null"."""
    log = tmp_path / f"{page.stem}-net.json"
    open_page(page, fragment, tmp_path, f"--log-net-log={log}")
    net = json.loads(log.read_text())
    start_job = net["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"].get("url", "?") for e in net["events"]
            if e["type"] == start_job and e.get("params", {}).get("initiator", "not an origin") != "not an origin"]


@needs_chromium
def test_the_page_makes_no_network_request(memorised_run, tmp_path):
    control = tmp_path / "control.html"  # proves the log sees a page's requests: this one asks for two
    control.write_text('<img src="http://127.0.0.1:9/x.png"><script>fetch("http://127.0.0.1:9/y")</script>')
    assert len(page_requests(control, "", tmp_path)) == 2
    page = tmp_path / "m.html"
    page.write_text(charrnn.load(memorised_run, device="cpu").export_html())
    assert page_requests(page, "seed=the&length=50&run=1", tmp_path) == []


@needs_chromium
def test_an_unknown_seed_character_gets_a_visible_message(memorised_run, tmp_path):
    page = tmp_path / "m.html"
    page.write_text(charrnn.load(memorised_run, device="cpu").export_html())
    dom = open_page(page, "seed=the%20Zebra&run=1", tmp_path)
    message = re.search(r'<div id="message"[^>]*>(.*?)</div>', dom, re.S).group(1)
    assert "does not know" in message and '"Z"' in html.unescape(message)
    assert generated_text(dom) == ""


def test_samples_during_training_leave_the_weights_and_random_stream_alone(tiny_corpus, tmp_path):
    import torch

    from charrnn import checkpoint

    lines = []
    job = replace(tiny_job(tiny_corpus, tmp_path / "a", steps=20, eval_every=5),
                  model=ModelOptions(hidden=16, embedding=8, dropout=0.3))  # dropout draws from the random stream
    run(replace(job, train=replace(job.train, sample_every=10, sample_length=30, sample_seed="the ")), log=lines.append)
    run(replace(job, out=tmp_path / "b"))
    a, b = (checkpoint.load(tmp_path / name / "latest.pt") for name in ("a", "b"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    samples = a["history"]["samples"]
    assert [s[0] for s in samples] == [10, 20] and all(s[1].startswith("the ") and len(s[1]) == 34 for s in samples)
    shown = [line for line in lines if line.startswith("--- sample at step")]
    assert len(shown) == 2 and "took" in shown[0] and samples[-1][1] in shown[-1]


def test_info_shows_the_latest_sample(runner, tiny_corpus, tmp_path):
    args = ["--hidden", "16", "--embedding", "8", "--steps", "10", "--eval-every", "5", "--seq-len", "16",
            "--batch-size", "4", "--precision", "fp32", "--sample-every", "5", "--sample-seed", "the "]
    trained = runner.invoke(app, ["train", str(tiny_corpus), *args, "--out", str(tmp_path / "r")])
    assert trained.exit_code == 0 and "--- sample at step 10" in trained.stderr and trained.stdout == ""
    info = runner.invoke(app, ["info", str(tmp_path / "r")])
    assert "sample at step 10" in info.stdout
    assert json.loads(runner.invoke(app, ["info", str(tmp_path / "r"), "--json"]).stdout)["history"]["samples"][-1][0] == 10
