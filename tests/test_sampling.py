import pytest
import torch

from charrnn import checkpoint
from charrnn.config import Cell, SampleConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.sampling import FastStepper, choose_next, generate, overflows_float32, stepper

from .conftest import TINY_TEXT, tiny_config


@pytest.fixture
def memorised(memorised_run):
    return checkpoint.restore_model(checkpoint.load(memorised_run / "best.pt"), torch.device("cpu"))


def text(model, vocab, seed, random_seed=0, **options):
    config = SampleConfig(**{"length": 60, **options})
    gen = torch.Generator().manual_seed(random_seed)
    return "".join(chars[0] for chars in generate(model, vocab, seed, config, gen))


def test_the_same_random_seed_gives_the_same_text(memorised):
    torch.manual_seed(0)
    untrained = (CharRNN(tiny_config()).eval(), memorised[1])  # uncertain, so the random seed matters
    assert text(*untrained, "the", temperature=1.0) == text(*untrained, "the", temperature=1.0)
    assert text(*untrained, "the", temperature=1.0) != text(*untrained, "the", temperature=1.0, random_seed=1)


def greedy_reference(model, vocab, seed, length):
    """Oracle: re-run the full forward over everything so far and take the argmax, one character at a time."""
    ids = vocab.encode(seed)
    for _ in range(length):
        logits, _ = model(torch.tensor([ids]))
        ids.append(int(logits[0, -1].argmax()))
    return vocab.decode(ids[len(seed):])


def test_temperature_zero_is_deterministic_argmax_decoding(memorised):
    model, vocab = memorised
    greedy = text(model, vocab, "quick", temperature=0, length=40)
    assert greedy == text(model, vocab, "quick", temperature=0, length=40, random_seed=99)
    with torch.no_grad():
        assert greedy == greedy_reference(model, vocab, "quick", 40)


def test_top_k_one_equals_greedy(memorised):
    assert text(*memorised, "lazy", temperature=1.0, top_k=1) == text(*memorised, "lazy", temperature=0)


def test_a_temperature_too_small_for_float32_is_greedy_not_a_crash(memorised):
    greedy = text(*memorised, "lazy", temperature=0)
    for temperature in (1e-40, 1e-45, 5e-324):  # logits / T overflow to inf (or T rounds to 0 in float32)
        assert text(*memorised, "lazy", temperature=temperature) == greedy
    logits = torch.tensor([[0.5, 3.0, -2.0, 2.9]])
    gen = torch.Generator().manual_seed(0)
    assert {int(choose_next(logits, gen, 1e-3)) for _ in range(50)} == {1}  # small but finite: as sharp
    model = memorised[0]
    assert not overflows_float32(model, 1e-3) and overflows_float32(model, 1e-40)
    with pytest.raises(RuntimeError):  # what the check prevents: softmax of overflowed logits is NaN
        choose_next(logits, gen, 1e-40)


def test_a_memorised_string_is_reproduced_from_its_first_characters(memorised):
    assert text(*memorised, "the qu", temperature=0, length=100) == TINY_TEXT[6:106]


def test_a_long_seed_primes_in_chunks_as_in_one_call(memorised, monkeypatch):
    # a whole seed file in one forward call held every layer's output for every character (tens of GB for 16 MB)
    from charrnn import sampling

    model, vocab = memorised
    seed = TINY_TEXT[:203]
    whole = text(model, vocab, seed, temperature=1.0, length=80)
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda ids, state=None: calls.append(ids.shape[1]) or forward(ids, state))
    monkeypatch.setattr(sampling, "PRIME_CHUNK", 50)
    assert text(model, vocab, seed, temperature=1.0, length=80) == whole
    assert calls == [50, 50, 50, 50, 3]


def test_stop_ends_the_sample_at_the_string(memorised):
    out = text(*memorised, "the", temperature=0, length=500, stop=("dog.",))
    assert out.endswith("dog.") and out.count("dog.") == 1


def test_unknown_seed_characters_are_named_or_dropped(memorised_run):
    import charrnn

    model = charrnn.load(memorised_run, device="cpu")
    with pytest.raises(CharRNNError, match="'Z'.*--drop-unknown"):
        model.prepare_seed("the Zebra", drop_unknown=False)
    assert model.prepare_seed("the Zebra", drop_unknown=True) == "the ebra"
    with pytest.raises(CharRNNError, match="every character of the seed is unknown"):
        model.prepare_seed("ZZZ", drop_unknown=True)


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = {int(choose_next(logits, gen, 1.0, top_p=0.75)) for _ in range(300)}
    assert draws == {0, 1}


def test_top_k_keeps_only_the_k_most_likely():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    gen = torch.Generator().manual_seed(0)
    assert {int(choose_next(logits, gen, 2.0, top_k=2)) for _ in range(300)} == {1, 3}


@pytest.mark.parametrize("cell", list(Cell))
@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("use_onednn", [True, False])
def test_fast_sampler_matches_training_forward(cell, skip, batch, use_onednn):
    from charrnn import kernels
    from charrnn.cpu import onednn

    if use_onednn and not onednn.available():
        pytest.skip("this torch build has no oneDNN linear op")
    torch.manual_seed(0)
    model = CharRNN(tiny_config(cell=cell, skip=skip, layers=3)).eval()
    ids = torch.randint(0, 29, (batch, 12))
    with torch.no_grad():
        full, _ = model(ids)
    fast = FastStepper(model, products=onednn.Batch1Products if use_onednn else kernels.PlainProducts)
    state = fast.initial_state(model.initial_state(batch))
    steps = []
    for t in range(12):
        logits, state = fast.step(ids[:, t], state)
        steps.append(logits)
    assert torch.allclose(torch.stack(steps, 1).softmax(-1), full.softmax(-1), atol=1e-5)


@pytest.mark.parametrize("hidden, samples, through_onednn",
                         [(16, 1, False), (384, 1, False), (512, 1, True), (256, 2, False), (128, 8, False), (256, 4, True)])
def test_the_sampler_streams_only_wide_networks_through_onednn(hidden, samples, through_onednn, monkeypatch):
    """oneDNN's small-batch product costs more per call than torch.addmm and streams wide weights faster: a narrow
    network steps through addmm (1.8 times as fast at 2x128 on a Zen 4), a wide one through oneDNN where it is;
    several samples at once make the weights count from a narrower width."""
    from charrnn import kernels
    from charrnn.cpu import onednn

    model = CharRNN(tiny_config(hidden=hidden)).eval()
    monkeypatch.setattr(onednn, "available", lambda: True)
    assert (stepper(model, samples).products is onednn.Batch1Products) is through_onednn
    monkeypatch.setattr(onednn, "available", lambda: False)  # a torch without the op: plain, whatever the width
    assert stepper(model, samples).products is kernels.PlainProducts


def test_several_samples_are_generated_together_and_differ(memorised):
    model, vocab = memorised
    config = SampleConfig(length=50, temperature=2.0, num_samples=3)
    steps = list(generate(model, vocab, "the", config, torch.Generator().manual_seed(0)))
    samples = ["".join(s[k] for s in steps) for k in range(3)]
    assert len(set(samples)) == 3 and all(len(s) == 50 for s in samples)
