"""Property-based tests: round trips over any text, and sample/eval never crash on arbitrary input."""

import string

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn.cli import app
from charrnn.vocab import Vocab

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@given(st.text(min_size=1))
def test_encode_decode_round_trips_any_text_over_its_vocabulary(text):
    vocab = Vocab.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text
    code_points = torch.tensor([ord(c) for c in text], dtype=torch.int32)
    assert vocab.decode(vocab.lookup(code_points).tolist()) == text


@FUZZ
@given(seed=st.text(max_size=30))
def test_sample_never_crashes_on_an_arbitrary_seed(memorised_run, runner, seed):
    result = runner.invoke(app, ["sample", "-c", str(memorised_run), "--seed", seed, "--length", "5", "--random-seed", "0"])
    if result.exit_code == 0:
        assert result.stdout.startswith(seed)
    else:
        assert result.exit_code == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


@FUZZ
@given(content=st.binary(max_size=300) | st.text(alphabet=string.ascii_lowercase + " .\nZ€", max_size=300).map(str.encode))
def test_eval_never_crashes_on_arbitrary_file_contents(memorised_run, runner, tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "f.txt"
    path.write_bytes(content)
    result = runner.invoke(app, ["eval", str(path), "-c", str(memorised_run), "--json"])
    assert result.exit_code in (0, 1), result.stderr
    if result.exit_code == 1:
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
