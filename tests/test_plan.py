"""charrnn.plan: the settings a run gets for what the user left out, from corpus size, budget and device type."""

import importlib.util
from pathlib import Path

import pytest
import torch

import charrnn
from charrnn import devices, plan
from charrnn.config import Cell, ModelConfig, TrainConfig
from charrnn.data import StreamBatches
from charrnn.model import CharRNN

CPU = plan.nominal_flops("cpu", threads=2)
SHAPE = {"vocab_size": 65, "layers": 2, "embedding": 65, "skip": True, "cell": Cell.LSTM, "batch_chars": 32 * 64, "seq_len": 64}


@pytest.mark.parametrize("cell", list(Cell))
@pytest.mark.parametrize("skip", [True, False])
def test_parameter_count_matches_the_model_it_describes(cell, skip):
    config = ModelConfig(vocab_size=97, cell=cell, layers=3, hidden=48, embedding=20, skip=skip)
    assert plan.parameters(vocab_size=97, hidden=48, layers=3, embedding=20, skip=skip, cell=cell) == \
        CharRNN(config).parameter_count()


@pytest.mark.parametrize("corpus_chars", [200_000, 1_000_000])
def test_a_longer_budget_never_picks_a_narrower_model_or_less_regularisation(corpus_chars):
    chosen = [plan.plan(corpus_chars=corpus_chars, budget=plan.Budget(minutes=m), flops=CPU, **SHAPE)
              for m in (0.2, 0.5, 1, 5, 15, 60, 240)]
    assert [p.hidden for p in chosen] == sorted(p.hidden for p in chosen)
    few = [p.weight_drop for p in chosen if p.members < plan.MEMBERS_WEIGHT_DROP_FROM]
    assert few == sorted(few)
    # except that an ensemble is itself the regulariser, and each member gets less (sessions 51 and 54), and
    # of 16 or more less again (session 52)
    ensembles = [p for p in chosen if p.members >= plan.MEMBERS_WEIGHT_DROP_FROM]
    assert all(p.weight_drop == (plan.MANY_MEMBERS_WEIGHT_DROP if p.members >= plan.MANY_MEMBERS_FROM
                                 else plan.MEMBERS_WEIGHT_DROP) for p in ensembles)
    assert chosen[0].hidden < chosen[-1].hidden and chosen[0].weight_drop < chosen[-1].weight_drop


def test_a_small_corpus_read_many_times_gets_weight_drop_and_a_large_one_read_once_gets_none():
    small = plan.plan(corpus_chars=200_000, budget=plan.Budget(minutes=15), flops=CPU, **SHAPE)
    large = plan.plan(corpus_chars=15_000_000, budget=plan.Budget(minutes=5), flops=CPU, **SHAPE)
    assert small.epochs > 5 and small.weight_drop == (plan.WEIGHT_DROP if small.members == 1 else plan.MEMBERS_WEIGHT_DROP) > 0
    assert large.epochs < 1 and large.weight_drop == 0


def test_weight_drop_starts_at_the_passes_where_it_helped():
    # tinyshakespeare: weight drop 0.2 cost 0.022 at 5 passes (2x256) and gained 0.021 at 7.75 and 0.018 at 10
    # against the dropout 0.3 earlier rules planned (bench/QUALITY.md)
    def at(epochs: float) -> plan.Plan:
        return plan.plan(corpus_chars=1_000_000, budget=plan.Budget(epochs=epochs), flops=CPU, **SHAPE)

    assert at(5.2).weight_drop == 0
    assert at(plan.WEIGHT_DROP_FROM_EPOCHS).weight_drop == at(10).weight_drop == at(30).weight_drop == plan.WEIGHT_DROP


def test_the_first_log_line_names_the_planned_weight_drop_unless_the_user_set_it():
    eight = plan.plan(corpus_chars=1_000_000, budget=plan.Budget(epochs=8), flops=CPU, **SHAPE)
    assert f"--weight-drop {plan.WEIGHT_DROP:g}" in eight.describe(plan.PLANNED)
    assert "--weight-drop" not in eight.describe(("hidden", "segment_len"))
    large = plan.plan(corpus_chars=15_000_000, budget=plan.Budget(minutes=60), flops=CPU, **SHAPE)
    assert large.weight_drop == 0  # a text read about once is not learned by heart


def test_a_clock_budget_stops_after_the_passes_that_help_and_an_explicit_one_does_not():
    # tinyshakespeare in 60 minutes (31 passes) over-fitted even with dropout 0.3 (bench/QUALITY.md)
    long = plan.plan(corpus_chars=1_000_000, budget=plan.Budget(minutes=60), flops=CPU, **SHAPE)
    assert long.max_epochs == long.epochs == plan.MAX_EPOCHS
    assert f"--epochs {plan.MAX_EPOCHS:g}" in long.describe(plan.PLANNED)
    assert "--epochs" not in long.describe(("hidden", "weight_drop"))
    assert long.weight_drop == plan.WEIGHT_DROP and long.eval_every == round(
        plan.MAX_EPOCHS * 1_000_000 / SHAPE["batch_chars"] / plan.VALIDATIONS_PER_RUN / 50) * 50
    for budget in (plan.Budget(epochs=30), plan.Budget(steps=20_000), plan.Budget(minutes=60, steps=20_000)):
        told = plan.plan(corpus_chars=1_000_000, budget=budget, flops=CPU, **SHAPE)
        assert told.max_epochs is None and told.epochs > 20
    large = plan.plan(corpus_chars=15_000_000, budget=plan.Budget(minutes=60), flops=CPU, **SHAPE)
    assert large.max_epochs is None and large.epochs < plan.MAX_EPOCHS


def test_a_small_text_is_read_more_times_than_a_large_one():
    # bench/QUALITY.md, session 48: 20 passes beat 10 by 0.20 and 0.22 on texts of 30,000 and 17,000 characters,
    # tied them at 73,000 and 85,000 and lost from 106,000 up
    sizes = (21_000, 30_000, 73_040, 85_168, 106_185, 120_000, 950_000)
    passes = [plan.max_epochs(chars, batch_chars=2048) for chars in sizes]
    assert passes == sorted(passes, reverse=True) and passes[:2] == [plan.MOST_EPOCHS] * 2
    assert passes[2:5] == [12.8, 11.9, 10.6] and passes[5:] == [plan.MAX_EPOCHS] * 2
    tiny = plan.plan(corpus_chars=30_000, budget=plan.Budget(minutes=60), flops=CPU, **SHAPE)
    assert tiny.max_epochs == tiny.epochs == plan.MOST_EPOCHS
    assert f"--epochs {plan.MOST_EPOCHS:g} (more passes over-fit)" in tiny.describe(plan.PLANNED)
    assert plan.plan(corpus_chars=30_000, budget=plan.Budget(epochs=5), flops=CPU, **SHAPE).epochs == 5


def test_a_text_too_small_for_enough_steps_in_its_passes_is_read_for_enough_steps():
    # bench/QUALITY.md, session 49: texts of 5,000 to 11,000 characters ran 40 to 105 steps in 20 passes and scored
    # 0.15 to 0.43 better with about 200; at 17,000 characters (163 steps) 200 tied; from 20,480 up 20 passes are 200
    for chars in (5_000, 10_000, 20_000):
        tiny = plan.plan(corpus_chars=chars, budget=plan.Budget(minutes=5), flops=CPU, **SHAPE)
        assert tiny.max_epochs == tiny.epochs == round(plan.MIN_STEPS * SHAPE["batch_chars"] / chars, 1) > plan.MOST_EPOCHS
        assert tiny.chars / SHAPE["batch_chars"] == pytest.approx(plan.MIN_STEPS, rel=0.01)  # passes rounded to 0.1
        assert f"({plan.MIN_STEPS} steps" in tiny.describe(plan.PLANNED) and "over-fit" not in tiny.describe(plan.PLANNED)
    assert plan.max_epochs(4_096, batch_chars=2048) == 2 * plan.max_epochs(8_192, batch_chars=2048) == 2 * 50
    assert plan.max_epochs(10_000, batch_chars=512) == plan.MOST_EPOCHS  # smaller steps: 20 passes are 390 of them
    assert plan.plan(corpus_chars=30_000, budget=plan.Budget(minutes=5), flops=CPU, **SHAPE).max_epochs == plan.MOST_EPOCHS


def test_a_run_that_reads_part_of_its_text_shuffles_shorter_segments_than_one_that_reads_it_all():
    part = plan.plan(corpus_chars=15_000_000, budget=plan.Budget(minutes=5), flops=CPU, **SHAPE)
    most = plan.plan(corpus_chars=15_000_000, budget=plan.Budget(minutes=60), flops=CPU, **SHAPE)
    whole = plan.plan(corpus_chars=1_000_000, budget=plan.Budget(minutes=5), flops=CPU, **SHAPE)
    assert part.epochs < 1 and part.segment_len == plan.FRESH_SEGMENT_WINDOWS * 64
    assert 1 < most.epochs < plan.LONG_SEGMENTS_FROM_EPOCHS and most.segment_len == plan.SEGMENT_WINDOWS * 64
    assert whole.epochs > plan.LONG_SEGMENTS_FROM_EPOCHS and whole.segment_len == plan.LONG_SEGMENT_WINDOWS * 64
    assert "--segment-len 128" in part.describe(plan.PLANNED) and "--segment-len" not in part.describe(("hidden",))


def test_a_run_reads_in_shuffled_segments_longer_the_more_passes_it_is_planned_for():
    # bench/QUALITY.md: at 0.7 passes char-rnn's layout scored 1.777 against segments' 1.629 (`cpp`, session 19);
    # from 2.0 to 2.9 passes segments tied or won, at 3 and 4 they tied (sessions 23, 24), on `cpp` at 4.4 planned
    # they won (session 45); from 5.5 to 10 on tinyshakespeare they tied or won, two seeds each (session 46)
    # below one pass shorter segments at a higher peak: `cpp`, 2x192, 3,785 steps, 1.727 and 1.740 (two seeds)
    # against 1.714 and 1.713 (session 31); at 10 passes segments of 1,024 beat 256 on a C++ and a Python text by
    # 0.055 and 0.026 (two seeds each), 0.007 behind on tinyshakespeare (session 47)
    fresh, shuffled = plan.FRESH_SEGMENT_WINDOWS * 64, plan.SEGMENT_WINDOWS * 64
    long = plan.LONG_SEGMENT_WINDOWS * 64
    cases = ((0.5, fresh, plan.FRESH_LR), (plan.FRESH_BELOW_EPOCHS, shuffled, plan.SHUFFLED_LR),
             (1.5, shuffled, plan.SHUFFLED_LR), (2.5, shuffled, plan.SHUFFLED_LR), (3.0, shuffled, plan.SHUFFLED_LR),
             (4.4, shuffled, plan.SHUFFLED_LR), (plan.LONG_SEGMENTS_FROM_EPOCHS, long, plan.SHUFFLED_LR),
             (5.5, long, plan.SHUFFLED_LR), (8.2, long, plan.SHUFFLED_LR), (plan.MAX_EPOCHS, long, plan.SHUFFLED_LR),
             (30, long, plan.SHUFFLED_LR))
    for epochs, segment_len, lr in cases:
        run = plan.plan(corpus_chars=1_000_000, budget=plan.Budget(epochs=epochs), flops=CPU, hidden=256, **SHAPE)
        assert run.epochs == pytest.approx(epochs) and (run.segment_len, run.lr) == (segment_len, lr)
    assert plan.FRESH_SEGMENT_WINDOWS < plan.SEGMENT_WINDOWS < plan.LONG_SEGMENT_WINDOWS
    assert plan.FRESH_LR > plan.SHUFFLED_LR > TrainConfig.lr


def test_a_text_too_short_for_long_segments_reads_the_shorter_ones():
    # 32 streams: 30,000 characters give each stream 14 windows, room for 4-window segments but not 16-window ones
    short = plan.plan(corpus_chars=30_000, budget=plan.Budget(epochs=10), flops=CPU, hidden=128, **SHAPE)
    assert (short.segment_len, short.lr) == (plan.SEGMENT_WINDOWS * 64, plan.SHUFFLED_LR)
    assert StreamBatches(torch.zeros(30_000, dtype=torch.long), 32, 64, segment_len=short.segment_len).shuffled
    assert not StreamBatches(torch.zeros(30_000, dtype=torch.long), 32, 64,
                             segment_len=plan.LONG_SEGMENT_WINDOWS * 64).shuffled


def test_a_run_in_shuffled_segments_takes_the_higher_peak_learning_rate():
    part = plan.plan(corpus_chars=15_000_000, budget=plan.Budget(minutes=5), flops=CPU, **SHAPE)
    most = plan.plan(corpus_chars=15_000_000, budget=plan.Budget(minutes=60), flops=CPU, **SHAPE)
    whole = plan.plan(corpus_chars=1_000_000, budget=plan.Budget(minutes=5), flops=CPU, **SHAPE)
    assert part.epochs < 1 < most.epochs < whole.epochs
    assert part.lr == plan.FRESH_LR and most.lr == whole.lr == plan.SHUFFLED_LR > TrainConfig.lr
    assert f"--lr {plan.FRESH_LR:g}" in part.describe(plan.PLANNED) and "--lr" not in part.describe(("hidden",))


def test_the_peak_learning_rate_follows_the_reading_order_the_user_chose():
    # an explicit --segment-len 0 on a text read in part reads in char-rnn's layout, so it gets that layout's peak
    layout = plan.plan(corpus_chars=15_000_000, budget=plan.Budget(minutes=5), flops=CPU, segment_len=0, **SHAPE)
    assert layout.segment_len == 0 and layout.lr == TrainConfig.lr
    segments = plan.plan(corpus_chars=1_000_000, budget=plan.Budget(minutes=5), flops=CPU, segment_len=512, **SHAPE)
    assert segments.epochs > 1 and segments.segment_len == 512
    assert segments.lr == plan.SHUFFLED_LR
    given = plan.plan(corpus_chars=15_000_000, budget=plan.Budget(minutes=5), flops=CPU, segment_len=512, **SHAPE)
    assert given.epochs < plan.FRESH_BELOW_EPOCHS and (given.segment_len, given.lr) == (512, plan.FRESH_LR)


def test_a_text_too_short_for_segments_is_planned_in_char_rnn_s_layout_and_its_learning_rate():
    # 32 streams of 64-character windows: 5,000 characters give each stream 2 windows, no more than a 2-window
    # segment needs, so data.StreamBatches reads char-rnn's slices whatever --segment-len says
    short = {"corpus_chars": 5_000, "budget": plan.Budget(steps=2), "flops": CPU, **SHAPE}
    assert plan.plan(**short).epochs < plan.FRESH_BELOW_EPOCHS
    assert (plan.plan(**short).segment_len, plan.plan(**short).lr) == (0, TrainConfig.lr)
    given = plan.plan(**short, segment_len=128)
    assert (given.segment_len, given.lr) == (128, TrainConfig.lr)  # kept as given, read in char-rnn's layout
    assert not StreamBatches(torch.zeros(5_000, dtype=torch.long), 32, 64, segment_len=128).shuffled
    longer = plan.plan(**{**short, "corpus_chars": 20_000})  # 9 windows a stream: more than one segment
    assert (longer.segment_len, longer.lr) == (plan.FRESH_SEGMENT_WINDOWS * 64, plan.FRESH_LR)
    assert StreamBatches(torch.zeros(20_000, dtype=torch.long), 32, 64, segment_len=128).shuffled


def test_a_clock_budget_s_plan_line_names_the_device_class_and_threads_it_planned_for(tiny_corpus, tmp_path):
    lines = []
    charrnn.train(tiny_corpus, minutes=1, steps=2, seq_len=8, batch_size=2, threads=1, out=tmp_path / "run",
                  log=lines.append)
    cpu = torch.device("cpu")
    expected = plan.device_class("cpu", native_bf16=devices.has_native_bf16(cpu), amx=devices.has_amx())
    assert lines[0].endswith(f"nominal {plan.nominal_flops(expected, threads=1) / 1e9:,.0f} GFLOP/s: {expected}, 1 thread)")


def test_threads_beyond_the_cpus_are_not_planned_for_and_get_a_warning(tiny_corpus, tmp_path, monkeypatch, runner):
    # --threads 1000 on 2 cores ran 10 times slower, and the plan had counted 501 threads' speed for --minutes
    from charrnn import devices, training
    from charrnn.cli import app

    monkeypatch.setattr(devices, "usable_cpus", lambda: 1)
    monkeypatch.setattr(training, "usable_cpus", lambda: 1)
    lines = []
    charrnn.train(tiny_corpus, minutes=1, steps=2, seq_len=8, batch_size=2, threads=2, out=tmp_path / "run",
                  log=lines.append)
    assert lines[0].endswith(", 1 thread)")
    assert lines[1] == "warning: --threads 2 is more than the 1 CPU this process may use; the extra threads only slow it down (try --threads 1)"
    sampled = runner.invoke(app, ["sample", "-c", str(tmp_path / "run"), "-n", "5", "--threads", "2"])
    assert sampled.exit_code == 0 and sampled.stderr.startswith("warning: --threads 2 is more than the 1 CPU ")
    assert runner.invoke(app, ["sample", "-c", str(tmp_path / "run"), "-n", "5", "--threads", "1"]).stderr == ""


def test_a_clock_budget_on_a_text_read_in_part_reads_enough_fresh_text_per_parameter():
    # bench/QUALITY.md, sessions 18 to 20: at equal time, widths planned under 5 characters per parameter lost
    large = {**SHAPE, "vocab_size": 113, "embedding": 113}

    def per_parameter(run: plan.Plan) -> float:
        return run.chars / plan.parameters(hidden=run.hidden, **{k: large[k] for k in ("vocab_size", "layers", "embedding", "skip", "cell")})

    for minutes, width in ((5, 192), (15, 256)):  # `cpp` on the `cpu` class: 2x192 beat 2x256, 2x256 beat 2x384
        run = plan.plan(corpus_chars=13_600_000, budget=plan.Budget(minutes=minutes), flops=CPU, **large)
        assert run.hidden == width and run.epochs < 1.1 and per_parameter(run) >= plan.FRESH_CHARS_PER_PARAMETER
        wider = plan.WIDTHS[plan.WIDTHS.index(width) + 1]
        too_wide = plan.plan(corpus_chars=13_600_000, budget=plan.Budget(minutes=minutes), flops=CPU, hidden=wider, **large)
        assert too_wide.epochs < 1 and per_parameter(too_wide) < plan.FRESH_CHARS_PER_PARAMETER
    # a --steps budget gives every width the same steps, so the width comes from characters per parameter alone
    steps = plan.plan(corpus_chars=13_600_000, budget=plan.Budget(steps=3615), flops=CPU, **large)
    assert steps.hidden > 192
    # a text read once or more is not held to it: tinyshakespeare's 5-minute plan stays 2x256
    assert plan.plan(corpus_chars=950_000, budget=plan.Budget(minutes=5), flops=CPU, **SHAPE).hidden == 256


def test_a_small_corpus_gets_no_more_parameters_than_it_can_support():
    tiny = plan.plan(corpus_chars=20_000, budget=plan.Budget(minutes=60), flops=CPU, **SHAPE)
    params = plan.parameters(hidden=tiny.hidden, **{k: v for k, v in SHAPE.items() if k not in ("batch_chars", "seq_len")})
    assert params <= plan.max_parameters(20_000) or tiny.hidden == plan.WIDTHS[0]


def test_a_small_text_supports_more_parameters_per_character_than_a_large_one():
    # bench/QUALITY.md, session 48: at 10 passes the next width up won on texts of 17,000 to 145,000 training
    # characters (argparse.py, 85k and 88 distinct: 2x192 1.234 against the old limit's 2x64 1.445) and lost on two of
    # about 200,000 (_pydecimal.py, 196k and 93 distinct: 2x256 2.432 against 2x192 2.410); tinyshakespeare keeps 2x384
    def planned_width(chars: int, vocab: int) -> int:
        return plan.plan(corpus_chars=chars, budget=plan.Budget(minutes=5), flops=plan.nominal_flops("cpu-amx"),
                         members=1, **{**SHAPE, "vocab_size": vocab, "embedding": vocab + vocab % 2}).hidden  # one network's
    assert planned_width(85_168, 88) == 192 and planned_width(195_967, 93) == 192
    assert planned_width(30_052, 75) == 128 and planned_width(950_000, 65) == 384
    assert plan.max_parameters(1_000_000) == plan.PARAMETERS_PER_CHAR * 1_000_000  # a large text: per character
    assert plan.max_parameters(85_000) > 7 * 85_000


@pytest.mark.parametrize("chars, vocab, width", [(1_900, 45, 16), (1_900, 65, 16), (4_750, 53, 32), (4_085, 65, 32),
                                                  (6_500, 65, 64), (10_200, 72, 64)])
def test_a_text_under_5000_characters_trains_narrow_networks(chars, vocab, width):
    # bench/QUALITY.md, sessions 53 and 55: scored on far text of its own kind, 2,000 characters (1,900 training)
    # trained better at 2x16 than 2x64 on seven texts, 5,000 best at 2x32 on four of five; from 5,000 up the rule
    # is unchanged (texts of 6,500 to 17,000 scored better at 2x64 than at 2x32 on their next tenth)
    planned = plan.plan(corpus_chars=chars, budget=plan.Budget(minutes=5), flops=plan.nominal_flops("cpu-bf16"),
                        **{**SHAPE, "vocab_size": vocab, "embedding": vocab + vocab % 2})
    assert planned.hidden == width


def test_a_clock_budget_that_would_over_fit_one_wide_network_trains_two_of_the_next_width_down():
    # bench/QUALITY.md, sessions 56 to 58: at equal steps two members of 2x256 beat one 2x384 on tinyshakespeare in
    # four pairs, two of 2x192 beat one 2x256 on three texts of 450,000 to 650,000 characters, and two of 2x128 beat
    # one 2x192 on six texts of 85,000 to 202,000, where two of 2x64 lost to one 2x128; below the threshold (5.45
    # passes) one 2x256 won
    bf16 = plan.nominal_flops("cpu-bf16")

    def planned(chars: int, budget: plan.Budget = plan.Budget(minutes=5), **options) -> plan.Plan:
        return plan.plan(corpus_chars=chars, budget=budget, flops=bf16, **{**SHAPE, "lanes": 2, **options})

    one, plays = planned(950_000, members=1), planned(950_000)
    assert (one.hidden, one.weight_drop) == (384, plan.WEIGHT_DROP) and one.epochs >= plan.WEIGHT_DROP_FROM_EPOCHS
    assert (plays.hidden, plays.members, plays.split_from) == (256, plan.SPLIT_MEMBERS, 384)
    assert plays.weight_drop == plan.MEMBERS_WEIGHT_DROP  # a member is regularised less than one network
    assert one.epochs < plays.epochs < plan.MAX_EPOCHS  # two of 2x256 count less arithmetic than one 2x384
    assert "--members 2 (networks of --hidden 256 instead of one of 384" in plays.describe(plan.PLANNED)
    assert planned(405_000).hidden == 192 and planned(405_000, members=1).hidden == 256
    assert planned(950_000, at_full_speed=lambda width: width != 256).hidden == 192  # the next width it trains fast
    short = plan.plan(corpus_chars=200_000, budget=plan.Budget(minutes=1), flops=CPU, lanes=2, **SHAPE)
    assert (short.hidden, short.members, short.split_from) == (128, plan.SPLIT_MEMBERS, 192)
    # not where the members would step in turn (one thread, a GPU: unmeasured), nor where one network would read its
    # text fewer times, nor from a width under SPLIT_FROM_WIDTH (two of 2x64 lost to one 2x128)
    assert (planned(950_000, lanes=1).hidden, planned(950_000, lanes=1).members) == (384, 1)
    cpp = planned(13_600_000)
    assert cpp.members == 1 and cpp.split_from is None and cpp.epochs < plan.WEIGHT_DROP_FROM_EPOCHS
    narrow = plan.plan(corpus_chars=60_000, budget=plan.Budget(minutes=1), flops=CPU, lanes=2, **SHAPE)
    assert (narrow.hidden, narrow.members) == (128, 1) and narrow.epochs >= plan.WEIGHT_DROP_FROM_EPOCHS
    # nor where the user chose the width or the networks, or how much to read
    assert (planned(950_000, hidden=384).hidden, planned(950_000, hidden=384).members) == (384, 1)
    assert (planned(950_000, members=3).hidden, planned(950_000, members=3).members) == (384, 3)
    for budget in (plan.Budget(epochs=8), plan.Budget(steps=4_000), plan.Budget(minutes=5, steps=4_000)):
        assert planned(950_000, budget).members == 1


def test_members_the_user_asks_for_share_a_clock_budget_and_are_planned_for_the_passes_each_reads():
    # --members 4 --minutes 5: each network reads a quarter of what one would, so it is regularised and read in the
    # order of a quarter of the passes (before session 57 the plan counted one network's passes for each)
    bf16 = plan.nominal_flops("cpu-bf16")
    one = plan.plan(corpus_chars=950_000, budget=plan.Budget(minutes=5), flops=bf16, hidden=384, members=1, **SHAPE)
    four = plan.plan(corpus_chars=950_000, budget=plan.Budget(minutes=5), flops=bf16, hidden=384, members=4, **SHAPE)
    assert four.epochs == pytest.approx(one.epochs / 4) and four.chars == pytest.approx(one.chars / 4)
    assert one.weight_drop == plan.WEIGHT_DROP and one.segment_len == plan.LONG_SEGMENT_WINDOWS * 64
    assert four.weight_drop == 0 and four.segment_len == plan.SEGMENT_WINDOWS * 64
    # a budget the pass cap ends is the same for each of them
    small = [plan.plan(corpus_chars=30_000, budget=plan.Budget(minutes=5), flops=bf16, members=k, **SHAPE) for k in (1, 4)]
    assert small[0].epochs == small[1].epochs == small[0].max_epochs


def test_the_width_limit_keeps_the_sizes_measured_best_at_ten_passes():
    # bench/QUALITY.md, session 10: at 10 passes 2x192 beat 2x128 on vim's syntax.txt (202k training chars, 98
    # distinct), and 2x512 lost to 2x384 on tinyshakespeare (0.95M)
    small = plan.plan(corpus_chars=202_000, budget=plan.Budget(minutes=5), flops=CPU,
                      **{**SHAPE, "vocab_size": 98, "embedding": 98})
    assert (small.hidden, small.max_epochs) == (192, plan.MAX_EPOCHS)
    plays = plan.plan(corpus_chars=950_000, budget=plan.Budget(minutes=60), flops=CPU, members=1, **SHAPE)
    assert (plays.hidden, plays.max_epochs) == (384, plan.MAX_EPOCHS)


def test_a_faster_device_class_plans_a_wider_model_for_the_same_minutes():
    cpu = plan.plan(corpus_chars=15_000_000, budget=plan.Budget(minutes=5), flops=CPU, **SHAPE)
    cuda = plan.plan(corpus_chars=15_000_000, budget=plan.Budget(minutes=5), flops=plan.nominal_flops("cuda"), **SHAPE)
    assert cuda.hidden > cpu.hidden


def test_device_classes_plan_from_fixed_figures_by_capability_threads_and_processes():
    assert plan.device_class("cpu", native_bf16=False) == "cpu"
    assert plan.device_class("cpu", native_bf16=True) == "cpu-bf16"
    assert plan.device_class("cpu", native_bf16=True, amx=True) == "cpu-amx"
    assert plan.device_class("cuda", native_bf16=True) == "cuda"
    two = plan.nominal_flops("cpu", threads=2)
    assert plan.nominal_flops("cpu-amx", threads=2) > plan.nominal_flops("cpu-bf16", threads=2) > two
    assert two < plan.nominal_flops("cpu", threads=8) < 4 * two  # more threads help, less than linearly
    assert plan.nominal_flops("cpu", threads=2, processes=4) == 4 * two
    assert plan.nominal_flops("cuda", threads=1) == plan.nominal_flops("cuda", threads=64)


def test_a_native_bf16_cpu_plans_a_wider_model_for_a_small_corpus_and_more_steps_for_a_large_one():
    # tinyshakespeare's training text for 5 minutes: the faster class reads it more often with a wider model
    # (bench/QUALITY.md, "Device classes"); `cpp` at 5 minutes on a 2-core Intel Xeon with AMX: 2x256 beat
    # 2x384 at full speed (1.629 against 1.637) and at half (1.691 against 1.751), session 19
    bf16 = plan.nominal_flops("cpu-bf16", threads=2)
    slow = plan.plan(corpus_chars=950_000, budget=plan.Budget(minutes=5), flops=CPU, members=1, **SHAPE)
    fast = plan.plan(corpus_chars=950_000, budget=plan.Budget(minutes=5), flops=bf16, members=1, **SHAPE)
    assert fast.hidden > slow.hidden and fast.epochs > slow.epochs
    cpp = {**SHAPE, "vocab_size": 113, "embedding": 113}
    assert plan.plan(corpus_chars=13_600_000, budget=plan.Budget(minutes=5), flops=bf16, **cpp).hidden == 256


def test_bf16_cpus_without_amx_plan_python_for_15_minutes_one_width_narrower():
    # An AMD EPYC Zen 4 (AVX512-BF16, no AMX) trains at about half the Xeon with AMX's speed; there 2x384 beat
    # 2x512 by 0.024-0.027 on `python` at 15 minutes, and came within 0.010 of it on `cpp` (bench/QUALITY.md,
    # sessions 35 and 36)
    python = {**SHAPE, "vocab_size": 222, "embedding": 128}
    widths = {name: plan.plan(corpus_chars=10_380_000, budget=plan.Budget(minutes=15),
                              flops=plan.nominal_flops(name, threads=2), **python).hidden for name in ("cpu-bf16", "cpu-amx")}
    assert widths == {"cpu-bf16": 384, "cpu-amx": 512}


def test_an_hour_on_a_bf16_cpu_without_amx_plans_2x512_for_large_corpora_and_with_amx_2x768():
    # On the Zen 4 for 60 minutes, 2x512 beat the 2x768 that 2 characters per parameter allowed, at equal time:
    # `cpp` 1.410 against 1.426, `python` 1.3743 against 1.3995 and 1.4003 (bench/QUALITY.md, session 38); the
    # Xeon with AMX reads more in the hour, and there 2x768 beat 2x512 on `cpp` (1.425 against 1.446, session 21)
    for vocab, embedding, chars in ((113, 114, 13_630_000), (222, 128, 10_380_000)):
        shape = {**SHAPE, "vocab_size": vocab, "embedding": embedding}
        widths = {name: plan.plan(corpus_chars=chars, budget=plan.Budget(minutes=60),
                                  flops=plan.nominal_flops(name, threads=2), **shape).hidden for name in ("cpu-bf16", "cpu-amx")}
        assert widths == {"cpu-bf16": 512, "cpu-amx": 768}


def test_steps_and_epochs_budgets_count_characters_exactly():
    by_steps = plan.plan(corpus_chars=100_000, budget=plan.Budget(steps=500), flops=CPU, hidden=256, **SHAPE)
    assert by_steps.chars == 500 * 32 * 64 and by_steps.hidden == 256
    assert by_steps.eval_every == 50  # about ten validations per run
    by_epochs = plan.plan(corpus_chars=100_000, budget=plan.Budget(epochs=3), flops=CPU, **SHAPE)
    assert by_epochs.epochs == pytest.approx(3)


def test_training_plans_what_the_user_left_out_and_keeps_what_they_gave(tiny_corpus, tmp_path):
    lines = []
    charrnn.train(tiny_corpus, steps=4, seq_len=8, batch_size=2, out=tmp_path / "planned", log=lines.append)
    planned = torch.load(tmp_path / "planned" / "latest.pt", weights_only=True)
    text_chars = len(tiny_corpus.read_text())
    expected = plan.plan(corpus_chars=text_chars - int(text_chars * 0.05), budget=plan.Budget(steps=4),
                         flops=CPU, vocab_size=29, layers=2, embedding=29, skip=True, cell=Cell.LSTM,
                         batch_chars=16, seq_len=8)
    assert planned["model_config"]["hidden"] == expected.hidden
    assert planned["model_config"]["dropout"] == 0  # the plan regularises with weight drop
    assert planned["model_config"]["weight_drop"] == expected.weight_drop
    assert planned["train_config"]["segment_len"] == expected.segment_len == plan.FRESH_SEGMENT_WINDOWS * 8  # 16 of ~1,800
    assert planned["train_config"]["eval_every"] == expected.eval_every
    assert planned["train_config"]["lr"] == expected.lr == plan.FRESH_LR  # 4 steps read 0.04 passes
    assert "planned for about" in lines[0] and f"--hidden {expected.hidden}" in lines[0]
    assert planned["plan"] in lines[0]

    charrnn.train(tiny_corpus, steps=4, seq_len=8, batch_size=2, hidden=24, dropout=0.3, weight_drop=0.1,
                  eval_every=3, segment_len=0, lr=2e-3, out=tmp_path / "given")
    given = torch.load(tmp_path / "given" / "latest.pt", weights_only=True)
    assert (given["model_config"]["hidden"], given["model_config"]["dropout"]) == (24, 0.3)
    assert given["model_config"]["weight_drop"] == 0.1
    assert (given["train_config"]["eval_every"], given["train_config"]["segment_len"]) == (3, 0)
    assert given["train_config"]["lr"] == 2e-3

    charrnn.train(tiny_corpus, steps=4, seq_len=8, batch_size=2, segment_len=0, out=tmp_path / "layout")
    layout = torch.load(tmp_path / "layout" / "latest.pt", weights_only=True)["train_config"]
    assert (layout["segment_len"], layout["lr"]) == (0, TrainConfig.lr)  # the plan's lr for the order given


def test_a_clock_budget_on_a_small_text_ends_after_the_planned_passes(tiny_corpus, tmp_path):
    lines = []
    result = charrnn.train(tiny_corpus, minutes=2, seq_len=8, batch_size=2, hidden=16, out=tmp_path / "run",
                           log=lines.append)
    saved = torch.load(tmp_path / "run" / "latest.pt", weights_only=True)
    assert saved["train_config"]["epochs"] == plan.MOST_EPOCHS and saved["train_config"]["minutes"] == 2  # a tiny text
    assert saved["elapsed_seconds"] < 60 and saved["epoch"] == pytest.approx(plan.MOST_EPOCHS)
    assert f"--epochs {plan.MOST_EPOCHS:g}" in lines[0]
    assert result.steps == saved["step"]
    # the steps end it long before the clock, so it is the run those passes give, and the first line says so
    assert "the same seed repeats this run exactly unless the clock gets ahead of the steps" in lines[0]
    members = saved["model_config"]["members"]  # the rest of the clock trains more networks (planned below)
    assert members > 1 and f"--members {members}" in lines[0]
    charrnn.train(tiny_corpus, epochs=plan.MOST_EPOCHS, seq_len=8, batch_size=2, hidden=16, members=members,
                  out=tmp_path / "passes")
    by_passes = torch.load(tmp_path / "passes" / "latest.pt", weights_only=True)
    assert by_passes["step"] == saved["step"]
    assert all(torch.equal(tensor, by_passes["model"][name]) for name, tensor in saved["model"].items())


def test_bench_planned_as_runs_another_classes_clock_plan_for_a_step_budget(tiny_corpus, tmp_path, monkeypatch):
    # bench/planned_as.py runs in fixed steps, anywhere, what a class plans for a clock budget (a CPU's fast hour
    # on a GPU: bench/RESULTS.md, session 39), so its plan must be exactly that class's
    spec = importlib.util.spec_from_file_location("planned_as", Path(__file__).parents[1] / "bench" / "planned_as.py")
    planned_as = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(planned_as)
    for name in ("device_class", "nominal_flops", "plan"):
        monkeypatch.setattr(plan, name, getattr(plan, name))  # put back after the test
    text_chars = len(tiny_corpus.read_text())
    shape = {"corpus_chars": text_chars - int(text_chars * 0.05), "vocab_size": 29, "layers": 2, "embedding": 30,
             "skip": True, "cell": Cell.LSTM, "batch_chars": 16, "seq_len": 8}
    by_clock = plan.plan(budget=plan.Budget(minutes=60), flops=plan.nominal_flops("cpu-bf16", threads=2), **shape)
    by_steps = plan.plan(budget=plan.Budget(steps=4), flops=CPU, **shape)
    assert by_clock.describe(plan.PLANNED) != by_steps.describe(plan.PLANNED)

    planned_as.plan_as("cpu-bf16", 60)
    charrnn.train(tiny_corpus, steps=4, seq_len=8, batch_size=2, threads=1, out=tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "latest.pt", weights_only=True)
    assert saved["plan"] == by_clock.describe(plan.PLANNED)
    assert saved["step"] == 4 and saved["train_config"]["minutes"] is None
    assert saved["model_config"]["weight_drop"] == by_clock.weight_drop > 0  # 20 passes of a tiny text
    assert saved["model_config"]["members"] == by_clock.members > 1
    assert saved["train_config"]["epochs"] == by_clock.max_epochs == plan.MOST_EPOCHS


def test_a_bf16_class_plans_no_width_it_would_train_in_fp32(monkeypatch):
    # On a CPU with AMX, torch 2.13's bf16 LSTM gets 1,024 units' gradients wrong, so such a layer trains in fp32 at
    # about half the speed `cpu-amx` counts; two hours of `cpp` (which plans 2x1024 there) plan 2x768 instead
    shape = {**SHAPE, "vocab_size": 113, "embedding": 114}
    budget, flops = plan.Budget(minutes=120), plan.nominal_flops("cpu-amx", threads=2)
    assert plan.plan(corpus_chars=13_630_000, budget=budget, flops=flops, **shape).hidden == 1024
    asked = []
    narrowed = plan.plan(corpus_chars=13_630_000, budget=budget, flops=flops, **shape,
                         at_full_speed=lambda width: asked.append(width) or width < 1024)
    assert (narrowed.hidden, narrowed.narrowed_from, asked) == (768, 1024, [1024, 768])  # widest fitting first
    assert "(not --hidden 1024: this device trains it slower than planned" in narrowed.describe(("hidden",))
    assert "not --hidden" not in plan.plan(corpus_chars=13_630_000, budget=budget, flops=flops, **shape).describe(("hidden",))


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_training_plans_a_bf16_class_by_the_widths_whose_bf16_gradients_are_right(tiny_corpus, tmp_path, monkeypatch,
                                                                                   precision):
    from charrnn import training

    monkeypatch.setattr(training, "has_native_bf16", lambda device: True)
    monkeypatch.setattr(training, "has_amx", lambda: True)  # the cpu-amx class
    monkeypatch.setattr(devices, "bf16_gradients_sound", lambda device_type, cell, width, hidden: hidden < 1024)
    given = []
    real_plan = plan.plan
    monkeypatch.setattr(plan, "plan", lambda **kwargs: given.append(kwargs) or real_plan(**kwargs))
    lines = []
    charrnn.train(tiny_corpus, cell="rnn", minutes=1, steps=2, seq_len=8, batch_size=2, threads=1, precision=precision,
                  out=tmp_path / "r", log=lines.append)
    kwargs, = given
    assert kwargs["at_full_speed"](768)  # bf16 RNNs run on every CPU, and this width's gradients are right
    assert kwargs["at_full_speed"](1024) is (precision == "fp32")  # an fp32 run does not care
    # and an fp32 run is planned at an fp32 CPU's speed, not the bf16 speed the class counts
    planned_as = "cpu" if precision == "fp32" else "cpu-amx"
    assert kwargs["flops"] == plan.nominal_flops(planned_as, threads=1)
    assert lines[0].endswith(f": {planned_as}{' for --precision fp32' * (precision == 'fp32')}, 1 thread)")


def test_a_short_poem_trains_with_the_defaults_and_the_log_says_what_gave_way(tmp_path):
    poem = tmp_path / "poem.txt"
    poem.write_text(("Shall I compare thee to a summer's day?\nThou art more lovely and more temperate.\n" * 8)[:600],
                    encoding="utf-8")
    lines = []
    charrnn.train(poem, out=tmp_path / "run", steps=3, device="cpu", precision="fp32", log=lines.append)
    saved = torch.load(tmp_path / "run" / "latest.pt", weights_only=True)
    assert saved["train_config"]["batch_size"] == 570 // 65 and saved["train_config"]["seq_len"] == 64
    assert "--batch-size 8, since 32 windows of 65 characters do not fit the 570 training characters" in lines[0]
    given = []
    charrnn.train(poem, out=tmp_path / "batch", steps=3, device="cpu", batch_size=32, log=given.append)
    assert "; --seq-len 16, since 32 windows of 65" in given[0]  # the window gives way to the batch the user set
    with pytest.raises(charrnn.CharRNNError, match=r"lower them \(--batch-size 8 fits this text\)"):
        charrnn.train(poem, out=tmp_path / "told", steps=3, device="cpu", batch_size=32, seq_len=64)
