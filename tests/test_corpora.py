import hashlib
import json

import pytest

from charrnn import corpora
from charrnn.cli import app
from charrnn.data import read_corpus
from charrnn.errors import CharRNNError


@pytest.fixture(scope="module")
def cpp_files():
    return [p.as_posix() for p in corpora.RECIPES["cpp"].files()]


def test_cpp_corpus_keeps_handwritten_pytorch_code(cpp_files):
    assert any(p.startswith("c10/util/") for p in cpp_files)
    assert any(p.startswith("ATen/core/") for p in cpp_files)
    assert any(p.startswith("torch/csrc/") for p in cpp_files)


def test_cpp_corpus_leaves_out_generated_and_vendored_files(cpp_files):
    assert not any(p.startswith("ATen/ops/") for p in cpp_files)
    assert not any("/generated/" in p for p in cpp_files)
    assert "ATen/Functions.h" not in cpp_files  # generated (marked @generated), not in ATen/ops
    for vendored in ("pybind11/", "fmt/", "google/", "oneapi/", "fbgemm/", "kineto/", "tensorpipe/", "dnnl"):
        assert not any(p.startswith(vendored) for p in cpp_files), vendored


def test_python_corpus_leaves_out_test_suites():
    files = [p.as_posix() for p in corpora.RECIPES["python"].files()]
    assert "json/decoder.py" in files and "collections/__init__.py" in files
    assert not any(p.startswith("test/") or "/test_" in p or p.startswith("test_") for p in files)
    assert not any("idle_test" in p or "site-packages" in p for p in files)


@pytest.mark.parametrize("name", ["cpp", "python"])
def test_builds_are_deterministic_and_name_each_file(name):
    first = corpora.assemble(corpora.RECIPES[name])
    second = corpora.assemble(corpora.RECIPES[name])
    assert hashlib.sha256(first.encode()).digest() == hashlib.sha256(second.encode()).digest()
    marker = corpora.RECIPES[name].marker + " file: "
    assert first.startswith(marker)
    assert first.count("\n" + marker) + 1 == len(set(corpora.RECIPES[name].files())) - duplicates_and_skips(name)


def duplicates_and_skips(name):
    recipe = corpora.RECIPES[name]
    seen, skipped = set(), 0
    for rel in recipe.files():
        raw = (recipe.root() / rel).read_bytes()
        digest = hashlib.sha256(raw).digest()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            skipped += digest not in seen
            continue
        skipped += digest in seen
        seen.add(digest)
    return skipped


def test_corpus_build_writes_exactly_the_text_train_uses(runner, tmp_path):
    result = runner.invoke(app, ["corpus", "build", "python", "--out", str(tmp_path / "py.txt")])
    assert result.exit_code == 0, result.stderr
    path, name = corpora.resolve("python")
    assert name == "python"
    assert (tmp_path / "py.txt").read_bytes() == path.read_bytes()
    assert read_corpus(path).fingerprint == read_corpus(tmp_path / "py.txt").fingerprint


def test_an_unknown_name_lists_the_built_in_ones(runner):
    with pytest.raises(CharRNNError, match="built-in: cpp, python"):
        corpora.resolve("shakespeare")
    result = runner.invoke(app, ["train", "shakespeare"])
    assert result.exit_code == 1 and "cpp, python" in result.stderr


def test_corpus_list_reports_size_and_cache_state(runner):
    before = json.loads(runner.invoke(app, ["corpus", "list", "--json"]).stdout)
    assert [c["cached"] for c in before] == [False, False]
    corpora.build("cpp")
    after = {c["name"]: c for c in json.loads(runner.invoke(app, ["corpus", "list", "--json"]).stdout)}
    assert after["cpp"]["cached"] and after["cpp"]["chars"] > 1_000_000 and 90 <= after["cpp"]["distinct"] <= 200


def test_corpus_list_prints_its_table_on_stdout_one_unwrapped_line_per_corpus(runner):
    result = runner.invoke(app, ["corpus", "list"])
    assert result.exit_code == 0 and result.stderr == ""
    assert "\x1b" not in result.stdout  # no colour codes into a pipe or file
    rows = {name: [line for line in result.stdout.splitlines() if f" {name} " in line] for name in corpora.names()}
    for name, lines in rows.items():
        assert len(lines) == 1, result.stdout  # `charrnn corpus list | grep cpp` finds the whole row
        assert corpora.describe(name).description in lines[0]


def test_eval_assembles_a_built_in_corpus_again_when_its_cached_file_is_gone(runner, tmp_path, monkeypatch):
    source = tmp_path / "src"
    source.mkdir()
    for k in range(3):
        (source / f"m{k}.py").write_text(f"def f{k}(x):\n    return x * {k} + 1\n" * 60)
    recipe = corpora.Recipe("mini", "a small stand-in", "#", lambda: source, lambda: "v1",
                            lambda root: root.glob("*.py"))
    monkeypatch.setitem(corpora.RECIPES, "mini", recipe)
    trained = runner.invoke(app, ["train", "mini", "--hidden", "16", "--batch-size", "4", "--seq-len", "16", "--steps", "6",
                                  "--out", "run", "--device", "cpu", "--precision", "fp32"])
    assert trained.exit_code == 0, trained.stderr
    before = runner.invoke(app, ["eval", "-c", "run", "--json"]).stdout
    corpora.cache_path(recipe).unlink()  # a cleared cache, or the checkpoint taken to another machine
    after = runner.invoke(app, ["eval", "-c", "run", "--json"])
    assert after.exit_code == 0, after.stderr
    assert json.loads(after.stdout)["nats_per_char"] == json.loads(before)["nats_per_char"]
    (source / "m0.py").write_text("changed\n" * 100)  # the source changed since: the fingerprint says so
    corpora.cache_path(recipe).unlink()
    assert "has changed since training" in runner.invoke(app, ["eval", "-c", "run"]).stderr
