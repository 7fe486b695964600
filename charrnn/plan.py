"""Settings that fit the corpus and the budget: `plan()` picks the width, weight drop, reading order, peak
learning rate, validation cadence and (for a --minutes budget) the most passes a run gets for whatever the
user did not set, from the corpus size, the budget and the device class alone; `data.fit_windows` lowers the batch
(and then the window) for a text too short for them.

It never times anything, so the same command on the same machine always picks the same settings. With
--minutes it plans from a nominal throughput per device class (`nominal_flops`: the device type, whether a
CPU multiplies bf16 natively, its threads), not from this machine's speed on the day; a faster day simply
reads more characters than planned.

The rule, in words (measurements in bench/QUALITY.md, "The rule"):
- Width: the widest layer such that the budget still reads at least CHARS_PER_PARAMETER characters per
  parameter (wider models learn more per character, but one that sees too little text per parameter ends
  under-trained), and the model has at most PARAMETERS_PER_CHAR parameters per character of corpus. On
  tinyshakespeare with 5 minutes of compute, 2x256 (about 4.5 characters per parameter) scored 2.357,
  2x384 (1.1) 2.374 and 2x512 (0.4) 2.452 bits/char on the held-out 10%. A threshold of 5, which keeps
  2x256 at 15 minutes, was timed and lost: `cpp` 1.770 against 2x384's 1.731, tinyshakespeare 2.128
  against 2.125. The limit of 3.25 parameters per character: at 10 passes with dropout 0.3, 2x192 beat 2x128
  on two texts of about 200k characters (vim's syntax.txt 2.553 against 2.659 held-out, 3.2 parameters per
  character; _pydecimal.py 2.520 against 2.590), while on tinyshakespeare 2x512 (3.66 per character) scored
  2.124 against 2x384's 2.086 at 10.5 passes. (Wider still won on the small texts, 2x256 at 5.2 per
  character on syntax.txt 2.532, but lost on tinyshakespeare at 3.66: not one limit. The whole file, 1.06M
  training characters, would give 2x512 3.29 per character: left out. bench/QUALITY.md, session 10.)
  A small text supports more parameters per character: up to SMALL_TEXT_PARAMETERS x the square root of its
  characters where that is more (under about 460,000: 5.0 per character at 196,000, 7.5 at 85,000, 12.7 at 30,000).
  At 10 passes (weight drop 0.2, segments, two seeds, session 48) the next width up won on every text from 17,000
  to 145,000 training characters, however many parameters per character it had: `argparse.py` (85,000) 2x64 1.445,
  2x128 1.273, 2x192 (7.3 per character) 1.234; vim's quickfix.txt (73,000) 2x64 2.662, 2x128 2.461, 2x192 (8.8)
  2.407; `inspect.py` (106,000) 2x128 1.447, 2x192 1.420, 2x256 (9.8) 1.410; vim's eval.txt (145,000) 2x128 2.156,
  2x192 2.097, 2x256 (7.2) 2.085; the GPL (30,000) 2x32 3.376, 2x64 3.083, 2x128 (10.0) 2.812; `textwrap.py`
  (17,000) 2x32 3.243, 2x64 2.983, 2x128 (18.9) 2.859. At about 200,000 it lost: `_pydecimal.py` 2x192 (3.2) 2.410
  against 2x256 (5.3) 2.432, syntax.txt 2.412 against 2.425. The square root is the simplest curve between the
  two: it keeps both 200,000-character texts and tinyshakespeare at their widths and gives each smaller text a
  width that won (not always the widest that did). Such a run reads its text MAX_EPOCHS times, so it is held to
  this limit and not to CHARS_PER_PARAMETER (which would allow 4.2 per character at 10 passes). On four texts the
  rule was not set on, its width beat the old limit's: vim's todo.txt and version5.txt (264,000-267,000) 2x256
  against 2x192 by 0.035 and 0.022, `typing.py` (100,000) and `turtle.py` (123,000) 2x192 against 2x128 by 0.059 and
  0.058.
  A text under TINY_TEXT_CHARS (5,000) supports at most TINY_TEXT_PARAMETERS_PER_CHAR (10) per character: too short
  for its next tenth to score it, it was scored on far text of the same file (session 55). 2,000 characters trained
  better at 2x16 than at 2x64 on seven sources (mean 0.18 bits/char), 5,000 best at 2x32 on four of five.
  A --minutes budget on a text it reads less than once must also read FRESH_CHARS_PER_PARAMETER characters per
  parameter (at the nominal throughput): such a run never reads a character twice, so it learns from new text and
  from its updates, and a narrower model gets more of both in the same time. At equal time (one thread, fixed
  steps, shuffled segments of 256, lr 1.5e-2), planned characters per parameter (c/p) and held-out bits/char: `cpp`
  for 5 minutes on the `cpu` class, 2x192 (11.0 c/p, 3,785 steps) 1.727 against 2x256 (4.2) 1.742 and 2x320 (1.9)
  1.782 (a second seed: 1.740 against 1.757), while narrower again lost, 2x128 (39) 1.775, as did 2x64 (55) for 1
  minute, 2.126 against 2x128 (7.9) 1.999; `python` there 2x192 (6.0) 1.684 against 2x256 (2.6) 1.709; for 15
  minutes `cpp` 2x256 (12.6) 1.620 against 2x384 (3.0) 1.632 (a second seed: 1.613 against 1.627), `python` 2x256
  (7.7) 1.557 against 2x384 (2.1) 1.598; on a `cpu-amx` (an Intel Xeon) for 5 minutes 2x256 (9.2 and 5.6)
  beat 2x384 (2.2 and 1.5) on `cpp` and `python` at full speed and at half, and for 15 minutes on `cpp` 2x384 (6.7)
  1.519 and 1.530 (two seeds) against 2x512 (2.4) 1.542 and 1.537. The limit lies between the widths that lost (4.2
  at most) and those that won (5.6 at least). It decides only the plans of clock budgets on large texts; a run
  planned to read all of its text is not held to it (on a `cpu-amx` `python` for 15 minutes, 1.19 passes, 2x384 at
  4.6 c/p tied 2x256 at 16.9: 1.499 each; `cpp` for 60 minutes, 1.22 passes, 2x768 at 2.1 beat 2x512 at 9.4,
  1.425 against 1.446), and tinyshakespeare's plans keep their widths. (In char-rnn's layout at
  older defaults, session 5, 2x384 beat 2x256 on `cpp` for 15 minutes, 1.731 against 1.770: shuffled segments and
  the higher peak changed that.) Passing --steps or --epochs fixes the steps for every width, so only the clock is
  held to it.
- Regularisation, from the planned passes, since a model that reads its text many times learns it by heart:
  none below WEIGHT_DROP_FROM_EPOCHS (on tinyshakespeare at 5 passes, 2x256, weight drop 0.2 scored 2.054
  held-out against 2.032 without; dropout 0.2 at about 4 passes 2.380 against 2.357, older defaults). From
  there, WEIGHT_DROP on each layer's recurrent weights (DropConnect, --weight-drop), and no dropout: on
  tinyshakespeare (2x384) weight drop alone scored 1.994 and 1.989 (two seeds) at 7.75 passes, the 15-minute
  plan, and 1.980 at 10, the 60-minute one, against 2.015 and 1.998 with dropout 0.3 alone (the earlier
  rules), 2.029 and 2.018 with both, 2.008 and 1.987 with weight drop and dropout 0.2; at 10 passes on its
  first 230k and 500k characters too (2.252 and 2.275 alone, 2.277 and 2.303 with dropout 0.3 on top). On eleven
  texts at 10 passes (prose, licences, manuals, Markdown, Python, C++) weight drop alone scored better on every
  run's own validation, text like the training text; dropout 0.3 on top scored better only on held-out text
  unlike it, most where it was far from it (a C++ slice whose held-out files score 3.5 times its own validation:
  0.21; Node's fs.md, 3.7 times: 0.04; vim's syntax.txt, 1.26 times: 0.024), and lost where the held-out text
  resembles the rest (a user manual by 0.059, licences 0.022, tkinter's source 0.015). Neither the kind of
  text nor its indentation or punctuation tells the two apart; only the text the model will meet does, which
  a plan cannot see (--help says when to add 0.3). Less or more lost where tried: weight drop 0.4 (2x384 at
  5 passes: 2.041 against 0.2's 2.010), 0.3 with dropout on syntax.txt (2.454). bench/QUALITY.md, sessions
  14 to 16.
- Reading order: a run reads its text in shuffled segments of SEGMENT_WINDOWS windows (data.StreamBatches), however
  many passes it is planned for, so what it reads samples the whole text instead of the start of each stream's
  slice, and each step's batch draws from places all over it. Only a text too short to give each stream more than
  one segment (under about 10,000 training characters at the defaults) reads in char-rnn's layout. On `cpp` (0.34
  passes in 5 minutes' steps, 2x256) segments of 4,096 characters took the held-out score from 1.938 (char-rnn's
  layout) to 1.886 at older defaults; at today's, shorter ones gained more: 4,096 1.835, 2,048 1.811, 1,024 1.776,
  512 1.772, 256 (four windows) 1.767, 128 1.756, and one window (64, no state carried from window to window) 1.770;
  on `python` (1,788 steps) 4,096 1.766, 256 1.715, 128 1.725. Four windows is the middle of that floor: two tie
  with it on the two texts together (0.010 better on `cpp`, 0.009 worse on `python`) and lie next to the edge at
  one. At every number of passes measured segments tied or won (held-out, char-rnn's layout at 0.011 against
  segments at 0.015, at each plan's nominal steps, fixed): they gained where a run had few steps for what it read,
  tinyshakespeare at 2.0 passes (2x192, 935 steps) 2.182 and 2.188 against 2.159 and 2.167 on two seeds, at 2.4
  (2x256) 2.103 and 2.106 against 2.100 and 2.112, at 2.7 2.099 and 2.104 against 2.084 and 2.107; `python` for 60
  minutes at 2.9 (2x512, 14,908 steps) 1.387 and 1.384 against 1.370 and 1.371 (sessions 23 and 24; timed, the hour
  read 3.4 passes, 17,200 steps, and the two tied: 1.366 against 1.370, session 25). At 3 and 4 passes
  (tinyshakespeare, 2x256) the two tied: 2.076 and 2.093 against 2.073 and 2.089, 2.050 and 2.061 against 2.050 and
  2.057. On `cpp`, whose files change their kind of text from one library to the next, two hours on a `cpu-amx`
  (2x768, 4.4 planned passes, 22,633 steps, 3.4 read) scored 1.3923 in char-rnn's layout against 1.3531 in segments
  (session 45). At the plans that read tinyshakespeare 5.5 to 10 times (session 46, two seeds each): 5.5 passes
  (2x256, 2,546 steps, fp32) 2.0295 and 2.0353 against 2.0273 and 2.0359; 6.5 (2x384, weight drop 0.2, 3,012, bf16)
  2.0031 and 2.0025 against 2.0001 and 2.0064; 8.2 (2x256, weight drop, 3,818, fp32) 2.0262 and 2.0342 against
  2.0245 and 2.0174; 10 (2x384, weight drop, 4,653, bf16) 1.9803 and 1.9742 against 1.9671 and 1.9663; and on a text
  of 196,000 training characters (`_pydecimal.py`, 2x128, weight drop, 957 steps, 10 passes, three seeds) 2.4597,
  2.4469 and 2.4753 against 2.4649, 2.4598 and 2.4582, a tie on the mean (0.0004). Char-rnn's layout deals the same
  batches in the same order every pass; segments deal a new order each pass. (Session 17's one seed at 5.3 passes,
  2.042 in segments against 2.032, which kept runs of five passes or more in char-rnn's layout until session 46,
  lies within these seeds' spread.) And a run planned just over one pass must not read char-rnn's layout in any
  case: the plan is nominal and a slow day reads half of it or less, and a run that reads part of its text in that
  layout never reaches the end of each stream's slice: on `cpp` at 5 minutes (2x256, a `cpu-amx` at full speed, 0.7
  passes) char-rnn's layout scored 1.777 against 1.629 in segments of 256 (session 19).
  From LONG_SEGMENTS_FROM_EPOCHS planned passes the segments are longer, LONG_SEGMENT_WINDOWS windows (1,024
  characters; SEGMENT_WINDOWS where the text is too short to shuffle them): at the `cpu-amx` 5-minute plan (2x384,
  weight drop 0.2, 10 passes, bf16, fixed steps, two seeds, session 47), char-rnn's layout, segments of 256 and of
  1,024 scored on a C++ text (every 16th file of `cpp`, 1.09 MB, 4,517 steps) 2.4846 and 2.4948, 2.5100 and 2.4938,
  2.4372 and 2.4568; on a Python one (every 12th file of `python`, 843 kB, 3,520 steps) 1.8872 and 1.9003, 1.8944
  and 1.8951, 1.8592 and 1.8784; on tinyshakespeare (4,653 steps) 1.9803 and 1.9742, 1.9671 and 1.9663, 1.9652 and
  1.9830; at 5.5 passes (tinyshakespeare, 2x256, 2,546 steps, fp32) 2.0295 and 2.0353, 2.0273 and 2.0359, 2.0233 and
  2.0222; `_pydecimal.py` at 10 (2x128, three seeds) 2.4606, 2.4610 and 2.4588 on the mean. Longer segments gained
  0.055 and 0.026 on the code texts and lost nothing beyond the seeds' spread elsewhere (0.007 on tinyshakespeare at
  10 passes). Five passes is where char-rnn's whole slices, the longest reading, began to tie segments of 256 (below
  it 256 won, on `cpp` at 4.4 passes by 0.039); 1,024 lies between the two.
- Learning rate: a run in shuffled segments, planned or given by --segment-len, takes a higher peak, SHUFFLED_LR,
  than TrainConfig.lr (tuned on runs of several passes in sessions 10 to 12, where 1.5e-2 tied it on
  tinyshakespeare). With segments of 256, 2x256, held-out bits/char at 1.1e-2, 1.5e-2, 2e-2: `cpp` (2,175 steps)
  1.767, 1.742, 1.739, a second seed 1.758, 1.757; `python` (1,788) 1.715, 1.709, 1.703. The lower end of that
  plateau.
- A run planned to read less than FRESH_BELOW_EPOCHS pass (it never reads a character twice) reads segments of
  FRESH_SEGMENT_WINDOWS windows instead of SEGMENT_WINDOWS, at FRESH_LR: each step's rows then move to new places
  twice as often. On `cpp` for 5 minutes on the `cpu` class (2x192, 3,785 steps, fp32; bench/QUALITY.md, session
  31) segments of 256 at 1.5e-2 scored 1.727 and 1.740 (two seeds), segments of 128 at 2e-2 1.714 and 1.713; each
  half alone gained part of it on the first seed (128 at 1.5e-2 1.720, 256 at 2e-2 1.724), and 2.5e-2 lost it
  again (1.722). `python` there (2,825 steps) tied, 1.682 against 1.684, and so did the `cpu-amx` 5-minute plans
  (2x256 in bf16): `cpp` at 4,891 steps 1.635 against 1.635, `python` at 4,577 1.582 against 1.581. Plans of one
  pass or more keep four windows and 1.5e-2: session 17's `cpp` 2x384 at 2,801 steps scored 1.656 with two
  windows against 1.643 with four (at 1.1e-2), and they were not measured at 2e-2.
- Passes: a --minutes budget that would read the text more than MAX_EPOCHS times stops after MAX_EPOCHS
  passes (the run gets --epochs MAX_EPOCHS; a small text more, below), and its learning rate decays over those
  passes instead of over the clock. Past about 9 passes even dropout 0.3 over-fits tinyshakespeare at 2x384: in
  60 minutes (31 passes) own validation bottomed at 9.3 passes, with the learning rate still high, and best.pt
  scored 2.140 held-out against 2.077 for 15 minutes (7.6 passes, decayed to the end); fixed-step runs decayed over
  10.5 and 15.8 passes scored 2.086 and 2.109. Capped, the 60-minute run stopped after 19 minutes and scored 2.087.
  A text under MORE_EPOCHS_BELOW characters gets more: MAX_EPOCHS x the square root of how many times smaller it
  is, up to MOST_EPOCHS (`max_epochs`; 11.9 passes at 85,000 characters, 20 from 30,000 down). Ten passes of such a
  text are a few hundred steps or fewer, seconds of a 5-minute budget. At session 48's widths (two seeds, the
  `cpu-amx` 5-minute plan otherwise), 10, 20 and 40 passes scored: `textwrap.py` (17,000 characters, 2x64) 2.983,
  2.767, 2.817; the GPL (30,000, 2x128) 2.812, 2.616, 2.665; and 10, 20, 30: quickfix.txt (73,000, 2x128) 2.461,
  2.444, 2.502; `argparse.py` (85,000, 2x192) 1.234, 1.242, 1.287. From 106,000 up 10 won: `inspect.py` 1.420 at
  10, 1.421 at 15, 1.428 at 20; eval.txt (145,000) 2.097, 2.108, 2.138; `_pydecimal.py` (196,000) 2.410, 2.453
  at 15; syntax.txt 2.412, 2.438.
  And however small the text, a clock budget reads it for at least MIN_STEPS steps (passes enough for 200 steps of
  --batch-size x --seq-len characters; a text under 20,480 characters at the defaults): at 20 passes, texts of 5,000
  to 11,000 characters ran 40 to 105 steps, half of them or more in the 50-step warm-up. At about 200 steps (two
  seeds, session 49) the Apache licence (9,711 characters) went from 3.199 to 2.768, a slice of tinyshakespeare
  (10,423) from 2.765 to 2.611, the GPL v1 (10,800) from 3.409 to 3.225, another slice (5,218, char-rnn's layout, two
  steps a pass: 157 steps) from 3.553 to 3.221; `textwrap.py` (16,859: 163 steps at 20 passes) tied, 2.767 against
  2.761. At about 300 steps three of the four lost part of that gain again (the Apache licence gained 0.11 more).
  On six texts the floor was not set on (licences and Python modules of 6,000 to 15,500 characters) it beat 20
  passes by 0.13 to 0.76.
- Members: a --minutes budget that ends its passes early (the cap above) trains as many networks side by side as fit
  in it at the nominal throughput, up to MAX_MEMBERS, each for the planned passes; the model predicts the mean of
  their probabilities (model.Ensemble). A text that fits its passes in a few seconds of a 5-minute budget has no
  better use for the rest: more passes, a wider model, more dropout or smaller batches each lost or went both ways on
  small texts (bench/QUALITY.md, session 49), while the mixture of 4 runs of the plan (four seeds) beat one on every
  text of 17,000 to 190,000 characters measured, by 0.056 to 0.151 bits/char (2 runs: 0.037 to 0.098), and two runs of
  tinyshakespeare's 15-minute plan by 0.038; runs reading the same batches mixed as well as runs reading their own.
  Trained together in one run (session 50, the `cpu-amx` 5-minute plan in fixed steps, two seeds), 4 members beat one
  network on the same eight texts by 0.047 to 0.169 and matched the separate runs mixed; timed, five texts of 11,000
  to 236,000 characters (three not among the eight) gained 0.089 to 0.181, the longest in 2.5 of its 5 minutes. More
  kept helping (session 51, the same protocol): 8 members beat 4 on seven of the eight texts (mean 0.014), 16 beat 8
  on three of 17,000 to 73,000 characters by 0.008 to 0.022, and 32 beat 16 on four of 9,700 to 47,000 by 0.003 to
  0.018 (session 52, both seeds of each). Members also want less regularisation than one network: weight drop 0.1
  instead of 0.2 gained 0.007 (mean of five texts) with 4 members, 0.011 (seven) with 8, 0.012 to 0.022 with 16,
  0.012 with 3 (tinyshakespeare's hour, two seeds; session 54) and 0.003 with 2 (a 405,000-character text), so from
  MEMBERS_WEIGHT_DROP_FROM members the plan sets
  MEMBERS_WEIGHT_DROP; and 0.05 beat 0.1 with 16 members on two texts (0.007, 0.018) and with 32 on three (0.003 to
  0.011; session 52), so from MANY_MEMBERS_FROM it sets MANY_MEMBERS_WEIGHT_DROP. Members are planned at
  MEMBERS_AT_SPEED of the class's figure, so that a day at half speed still reads every member's passes (timed: 2
  members of a 405,000-character text at one thread, the 2-thread plan, read theirs in 4.4 of 5 minutes and scored
  1.9267 against one network's 1.9597), each step counted at its arithmetic plus MEMBER_STEP_SECONDS, what small
  members spend beyond it (at one thread 9.5 ms a step; counting only the arithmetic would give a 190,000-character
  text 9 members of 2x192, about 360 s at one thread). On a CPU the members step side by side, one per thread
  (charrnn.lanes: at two threads a Zen 4 stepped 8 members of 2x64 to 2x256 1.14 to 1.27 times faster than in turn, at
  233 to 268 GFLOP/s from 2x128 up against the class's 250, so with little of the cost beyond the arithmetic left), so
  that cost is spent on `lanes` threads at once and counted divided by them. Where the clock ends the passes first (a
  large text) one network gets the whole budget.
  Except where that one network, 2x192 or wider (SPLIT_FROM_WIDTH; 2x256 before session 58), would read its text
  WEIGHT_DROP_FROM_EPOCHS times or more (it learns the text by heart), no second one fits at half speed, and the
  members step side by side (`lanes`, a CPU's threads): then the budget trains SPLIT_MEMBERS networks of the next
  width down, about the same arithmetic (two of 2x256 count 0.95 of one 2x384, two of 2x192 1.2 of one 2x256, two of
  2x128 1.0 of one 2x192), each at MEMBERS_WEIGHT_DROP. At equal steps (one thread each, bench/QUALITY.md, sessions 56
  to 58): two of 2x256 beat one 2x384 on tinyshakespeare in all four pairs, by 0.006 to 0.022 (the `cpu` class's 15
  minutes on a slow day, 2,744 steps in fp32, 1.9921 and 1.9931 against 2.0074 and 2.0017; the `cpu-bf16` class's 5
  minutes, 2,687 in bf16, 1.9990 and 1.9899 against 2.0050 and 2.0118); at the `cpu-bf16` 5-minute plan's 10 passes
  two of 2x192 beat one 2x256 on tinyshakespeare's first 450,000 characters (three seeds: 1.9473, 1.9484 and 1.9445
  against 1.9680, 1.9752 and 1.9799), where two of 2x128 lost (2.0067 and 2.0064), and on 650,000-character slices of
  `cpp` (1.7653 and 1.7495 against 1.9043 and 1.9198) and of the Python standard library (1.6781 and 1.6659 against
  1.7348 and 1.7045); at the 1-minute plans' 10 to 12 passes two of 2x128 beat one 2x192 on six texts of 85,000 to
  202,000 training characters (three seeds each, mean bits/char: `_pydecimal.py` 2.3345 against 2.4265, vim's
  syntax.txt 2.3736 against 2.4370, `turtle.py` 2.0093 against 2.0768, vim's eval.txt 2.0756 against 2.1022,
  `argparse.py` 1.2065 against 1.2221, tinyshakespeare's first 200,000 characters 2.2459 against 2.2598; seventeen of
  the eighteen pairs, the other lost by 0.007), while two of 2x64 lost to one 2x128 on vim's quickfix.txt (2.4884
  against 2.4362) and NEWS.txt (2.4454 against 2.3893), so 2x128 is the narrowest width split. Where each narrower
  network has under one parameter per training character the split went both ways (two seeds each): at 0.6 it won on
  two `cpp` slices of 556,000 characters (by 0.083 and 0.011, 7 passes) and on tinyshakespeare's 953,000 (two of 2x192
  against one 2x256 at 10 passes, 1.9972 and 1.9972 against 1.9997 and 2.0166), and lost on two slices of the Python
  standard library (by 0.024 and 0.031) and, at 0.75, on tinyshakespeare's first 385,000 (9 passes, by 0.0095): a
  floor of parameters per character, tried, would have traded the wins for the losses, so there is none. At 7 to 8
  passes on texts of 200,000 characters (1.65 per character) it won by 0.047 and 0.050. Two of 2x256 side by side at
  two threads stepped 0.91 to 1.10 times as fast as one 2x384 (session 56). Timed on the Zen 4 (`cpu-bf16`, session
  57), tinyshakespeare's 5 minutes scored 1.9845 and 1.9867 against one 2x384's 2.0089 and 2.0101 the same day (at
  1.13 to 1.15 times its steps), its 15 minutes 1.9567 against 1.9741. Below the threshold it lost: at 5.45 passes
  (the `cpu` class's 5-minute tinyshakespeare) one 2x256 scored 2.0256 and 2.0156 against two of 2x192's 2.0403 and
  2.0441 at equal arithmetic (2,537 and 2,120 steps). Not measured: members stepped in turn (one thread, torchrun, a
  GPU, where a step costs at least 8 ms at any width, so two would take about twice one's time).
- Validation: about VALIDATIONS_PER_RUN times per run, so that it costs a bounded share of the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from charrnn.config import Cell, TrainConfig
from charrnn.data import reads_in_segments

# Training throughput, counted as 6 x parameters FLOP per character (forward and backward).
# CPU, per thread (bench/QUALITY.md, "Device classes"): with 2 threads, an AVX2-only AMD EPYC (Zen 3) measured
# 77-109 GFLOP/s so counted (widths 256-512, fp32), an AVX-512 Intel Xeon without bf16 92-102 (widths 256-1024).
# Natively bf16, two classes about 2 times apart, told apart by AMX tiles (a fact of the CPU, never a timing):
# - `cpu-amx`: an Intel Xeon with AMX measured 427-560 in whole 5-minute runs (2x256-2x384, even embeddings, since
#   session 32; 215-273 before, when odd widths took oneDNN's slow bf16 path). It counts 200 per thread, its figure
#   on a slower day; every goal timed on it was met with this figure (sessions 32 and 33).
# - `cpu-bf16` (AVX512-BF16 without AMX, the AMD EPYCs): a Zen 4 measured 205-281 in whole 5- to 60-minute runs on
#   slow days (bf16 GEMM 373-423, as slow as the host on its slow day, 413), and at 400 its 15-minute
#   `python` plan (2x512) scored 0.024-0.027 worse than 2x384 at equal time. It counts 125 per thread, the Zen 4's
#   middle, which plans 2x384 there (session 36). A Zen 5 measured 476 in a step benchmark (default model,
#   session 2): on such a fast day the plans are narrower than the day could carry, the cheaper mistake.
# A class plans by its slower days: a plan too wide for the day costs more than one too narrow (on the Xeon at
# 5 minutes, 2x384 against 2x256: 0.008 and 0.022 worse on `cpp` and `python` at full speed, 0.060 and 0.053 at
# half), and a figure below the day's lets a short text be read more often than planned, unregularised (at 110,
# tinyshakespeare's 5-minute plan of 5.7 passes read 13.3 in session 32 and scored 2.058). Only 2-thread machines
# were measured: past 2 threads each further thread counts half, since small recurrent products scale worse than
# linearly.
CPU_FLOPS_PER_THREAD = {"cpu": 5.0e10, "cpu-bf16": 1.25e11, "cpu-amx": 2.0e11}
BF16_CLASSES = ("cpu-bf16", "cpu-amx")  # the classes whose figure counts bf16 arithmetic
MEASURED_THREADS = 2
NOMINAL_FLOPS = {"mps": 1.0e12, "cuda": 1.0e13}
WIDTHS = (16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
# 2.4, not 2: on a Zen 4 (`cpu-bf16`) for 60 minutes, 2x768 planned at 2.2-2.4 lost to 2x512 at equal time on
# `cpp` (1.426 against 1.410) and `python` (1.3995 and 1.4003 against 1.3743); bench/QUALITY.md, session 38.
CHARS_PER_PARAMETER = 2.4
FRESH_CHARS_PER_PARAMETER = 5.0  # what a clock budget must read per parameter of a run that reads part of its text
PARAMETERS_PER_CHAR = 3.25
# A text under about 460,000 characters supports more: up to SMALL_TEXT_PARAMETERS x sqrt(characters), 5 per character
# at 196,000, 7.5 at 85,000 (bench/QUALITY.md, session 48).
SMALL_TEXT_PARAMETERS = 2200.0
# A text under 5,000 characters supports no more than 10 per character. Scored on text of its own kind far from
# it, 2,000 characters trained better at 2x16 than at 2x64 on seven texts of seven sources (by 0.06 to 0.40
# bits/char, mean 0.18), 5,000 best at 2x32 on four of five (bench/QUALITY.md, sessions 53 and 55).
TINY_TEXT_CHARS = 5_000
TINY_TEXT_PARAMETERS_PER_CHAR = 10.0
WEIGHT_DROP_FROM_EPOCHS = 5.75
WEIGHT_DROP = 0.2
MAX_EPOCHS = 10.0
MORE_EPOCHS_BELOW = 120_000  # training characters under which a clock budget may read more than MAX_EPOCHS passes
MOST_EPOCHS = 20.0
# Steps a clock budget gives a text at least, even past MOST_EPOCHS passes: a text of 10,000 characters is five steps
# a pass, and 20 passes of it ended before the run had learnt (bench/QUALITY.md, session 49).
MIN_STEPS = 200
SEGMENT_WINDOWS = 4  # a planned segment is this many --seq-len windows: 256 characters at the default 64
LONG_SEGMENTS_FROM_EPOCHS = 5.0  # planned passes from which a run reads LONG_SEGMENT_WINDOWS-window segments
LONG_SEGMENT_WINDOWS = 16  # 1,024 characters at the default --seq-len 64
SHUFFLED_LR = 1.5e-2  # the peak for a run planned in shuffled segments
FRESH_BELOW_EPOCHS = 1.0  # planned passes under which a run reads FRESH_SEGMENT_WINDOWS-window segments at FRESH_LR
FRESH_SEGMENT_WINDOWS = 2  # 128 characters at the default --seq-len 64
FRESH_LR = 2e-2
VALIDATIONS_PER_RUN = 10
# Networks a budget trains side by side at most: 8 beat 4 by 0.014 bits/char on the mean of eight small texts, 16
# beat 8 by 0.008 to 0.022 on three of 17,000 to 73,000 characters (bench/QUALITY.md, session 51), and 32 beat 16 on
# all four texts of 9,700 to 47,000 characters, both seeds each, by 0.003 to 0.018 (mean 0.0105; session 52). Each
# costs its share of the time to sample and score, and of the exported page.
MAX_MEMBERS = 32
# What a member's step costs beyond its arithmetic, counted at the class's figure: at one thread on the Xeon with AMX
# a member's step measured 9.5 ms plus its arithmetic at 204 GFLOP/s (16 runs of 2x64 to 2x192 members, session 51),
# and two threads ran 2x128 members no faster; a GPU's step at batch 32 took about 8 ms at every width (an H200,
# session 36). Planned at MEMBERS_AT_SPEED, this counts 16 ms, or 8 ms for members stepped on two threads side by side.
MEMBER_STEP_SECONDS = 0.008
# Members are planned at this fraction of the class's figure: they share the clock, so on a slow day (or one thread)
# each would read fewer passes than planned, and an ensemble cut to half its passes can score worse than one network
# that read them all (tinyshakespeare: 5.5 passes 2.03, 10 passes 1.98; two members gained 0.035-0.04).
MEMBERS_AT_SPEED = 0.5
# An ensemble wants less regularisation in each member than one network does: weight drop 0.1 instead of
# WEIGHT_DROP gained 0.007 on the mean of five small texts with 4 members, 0.011 on seven with 8, 0.003 with 2 on a
# 405,000-character text (bench/QUALITY.md, session 51), and 0.016 and 0.009 (two seeds) with 3 on tinyshakespeare's
# hour (the `cpu-bf16` plan, session 54).
MEMBERS_WEIGHT_DROP = 0.1
MEMBERS_WEIGHT_DROP_FROM = 2
# And 16 or more want less again: 0.05 instead of 0.1 gained 0.007 and 0.018 with 16 members on two texts of 30,000
# and 47,000 characters, 0.003 to 0.011 (mean 0.008) with 32 on three of 9,700 to 30,000, both seeds of each, all ten
# runs better (bench/QUALITY.md, session 52).
MANY_MEMBERS_WEIGHT_DROP = 0.05
MANY_MEMBERS_FROM = 16
# Except on a text so small that a clock budget reads it for MIN_STEPS steps (past MOST_EPOCHS passes): there 32
# members of 2x64 without weight drop beat 0.05 on five of eight texts of 1,900 to 16,900 training characters, both
# seeds or all three the same way (by 0.005 to 0.14), lost on one (0.012), and split on two, and 8 without it beat 0.1
# on three of four (mean 0.015; the prose lost 0.002); with 4 the prose lost 0.024 (bench/QUALITY.md, session 53).
# At 20 passes, above the floor, two texts of 25,700 and 30,100 kept 0.025-0.05 (0 lost 0.003 and 0.005).
FLOOR_MEMBERS_WEIGHT_DROP = 0.0
FLOOR_MEMBERS_FROM = 8
# A clock budget that would train one network of SPLIT_FROM_WIDTH or wider for WEIGHT_DROP_FROM_EPOCHS passes or more
# trains SPLIT_MEMBERS of the next width down instead, where they step side by side (lanes): about the same arithmetic
# (0.95 times 2x384's for two of 2x256, 1.2 times 2x256's for two of 2x192, 1.0 times 2x192's for two of 2x128). At
# equal steps two of 2x256 beat one 2x384 on tinyshakespeare in all four pairs, by 0.006 to 0.022 (bench/QUALITY.md,
# session 56), two of 2x192 beat one 2x256 on three texts of 450,000 to 650,000 characters, where two of 2x128 lost
# (session 57), and two of 2x128 beat one 2x192 on six texts of 85,000 to 202,000 characters (by 0.014 to 0.092 on the
# mean of three seeds), where two of 2x64 lost to one 2x128 on two of 47,000 and 73,000 (by 0.052 and 0.056; session
# 58).
SPLIT_MEMBERS = 2
SPLIT_FROM_WIDTH = 192
# What a plan may set; any explicit option wins.
PLANNED = ("hidden", "weight_drop", "segment_len", "lr", "eval_every", "epochs", "members", "batch_size", "seq_len")
# Of those, the ones with a fixed default that the plan only lowers, for a text too short for it (`data.fit_windows`).
FITTED = ("batch_size", "seq_len")


@dataclass(frozen=True)
class Budget:
    """What the user asked for; the first limit reached ends the run."""

    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None


@dataclass(frozen=True)
class Plan:
    hidden: int
    weight_drop: float
    segment_len: int  # 0: char-rnn's layout
    lr: float
    eval_every: int
    chars: float  # characters the run is planned to read (nominal throughput with --minutes)
    epochs: float  # passes over the training text that makes
    max_epochs: float | None = None  # for a --minutes budget that would read more: stop after this many passes
    narrowed_from: int | None = None  # the width the budget allowed, where the device trains it slower than counted
    members: int = 1  # networks trained side by side (model.Ensemble)
    split_from: int | None = None  # the width of the one network these members replace, which would over-fit

    def describe(self, chosen: tuple[str, ...]) -> str:
        """For the first log line: what the plan set and what it planned from."""
        values = {"hidden": f"--hidden {self.hidden}", "weight_drop": f"--weight-drop {self.weight_drop:g}",
                  "segment_len": f"--segment-len {self.segment_len}", "lr": f"--lr {self.lr:g}",
                  "eval_every": f"--eval-every {self.eval_every}"}
        if self.max_epochs:  # planned only when the clock would read more
            why = ("more passes over-fit" if self.max_epochs <= MOST_EPOCHS else
                   f"{MIN_STEPS} steps, the fewest a clock budget trains for")
            values["epochs"] = f"--epochs {self.max_epochs:g} ({why})"
        if self.split_from:
            values["members"] = (f"--members {self.members} (networks of --hidden {self.hidden} instead of one of "
                                 f"{self.split_from}, which would learn the text by heart; their mean predicts)")
        elif self.members > 1:  # one network is what a user expects: named only when the plan trains more
            values["members"] = (f"--members {self.members} (the budget trains {self.members} networks for those "
                                 "passes; their mean predicts)")
        picked = ", ".join(values[name] for name in PLANNED if name in chosen and name in values)
        narrowed = (f" (not --hidden {self.narrowed_from}: this device trains it slower than planned, in fp32, since its "
                    "bf16 gradients are wrong here)" if self.narrowed_from else "")
        passes = f"{self.epochs:.2g}" if self.epochs < 100 else f"{self.epochs:.0f}"  # not 2e+02
        return f"planned for about {passes} passes over the text: {picked or 'nothing (all set)'}{narrowed}"


def device_class(device_type: str, *, native_bf16: bool, amx: bool = False) -> str:
    """The throughput class a device plans by: cuda, mps, cpu-amx (bf16 by AMX tiles: Intel Xeons since Sapphire
    Rapids), cpu-bf16 (AVX512-BF16 without AMX: AMD EPYC Zen 4 and 5) or cpu (fp32). `native_bf16` is the device's,
    `amx` the CPU's, which only a cpu device reads."""
    if device_type in NOMINAL_FLOPS:
        return device_type
    if not native_bf16:
        return "cpu"
    return "cpu-amx" if amx else "cpu-bf16"


def nominal_flops(device_class: str, *, threads: int = MEASURED_THREADS, processes: int = 1) -> float:
    """FLOP/s the plan assumes for a run: a fixed figure per device class and thread count, never a timing."""
    if device_class in NOMINAL_FLOPS:
        per_process = NOMINAL_FLOPS[device_class]
    else:
        counted = min(threads, MEASURED_THREADS) + max(0, threads - MEASURED_THREADS) / 2
        per_process = CPU_FLOPS_PER_THREAD.get(device_class, CPU_FLOPS_PER_THREAD["cpu"]) * counted
    return per_process * processes


def parameters(*, vocab_size: int, hidden: int, layers: int, embedding: int, skip: bool, cell: Cell) -> int:
    """CharRNN's parameter count, without building it."""
    gates = {Cell.LSTM: 4, Cell.GRU: 3, Cell.RNN: 1}[Cell(cell)]
    total = vocab_size * embedding
    for n in range(layers):
        inputs = embedding if n == 0 else (embedding + hidden if skip else hidden)
        total += gates * hidden * (inputs + hidden + 2)  # W_ih, W_hh and two bias vectors
    outputs = hidden * (layers if skip else 1)
    return total + outputs * vocab_size + vocab_size


def max_epochs(corpus_chars: int, batch_chars: int) -> float:
    """The most passes a clock budget reads a text of `corpus_chars` training characters in steps of `batch_chars`:
    MAX_EPOCHS, or for a text under MORE_EPOCHS_BELOW MAX_EPOCHS x sqrt(MORE_EPOCHS_BELOW / corpus_chars), at most
    MOST_EPOCHS; and at least the passes MIN_STEPS steps read (one decimal)."""
    more = MAX_EPOCHS * math.sqrt(MORE_EPOCHS_BELOW / max(1, corpus_chars))
    enough_steps = MIN_STEPS * batch_chars / max(1, corpus_chars)
    return round(max(min(MOST_EPOCHS, max(MAX_EPOCHS, more)), enough_steps), 1)


def max_parameters(corpus_chars: int) -> float:
    """The most parameters a text of `corpus_chars` training characters supports: PARAMETERS_PER_CHAR per character,
    or for a small text SMALL_TEXT_PARAMETERS x its square root, whichever is more; under TINY_TEXT_CHARS no more
    than TINY_TEXT_PARAMETERS_PER_CHAR per character."""
    most = max(PARAMETERS_PER_CHAR * corpus_chars, SMALL_TEXT_PARAMETERS * math.sqrt(corpus_chars))
    if corpus_chars < TINY_TEXT_CHARS:
        most = min(most, TINY_TEXT_PARAMETERS_PER_CHAR * corpus_chars)
    return most


def plan(*, corpus_chars: int, budget: Budget, flops: float, vocab_size: int, layers: int, embedding: int,
         skip: bool, cell: Cell, batch_chars: int, seq_len: int, hidden: int | None = None,
         segment_len: int | None = None, members: int | None = None, lanes: int = 1,
         at_full_speed: Callable[[int], bool] = lambda width: True) -> Plan:
    """The settings for a run on `corpus_chars` characters of training text within `budget`.

    `flops` (`nominal_flops`, all processes) turns minutes into characters; `batch_chars` (batch size x sequence
    length, all processes) turns steps into characters; `seq_len` (one window) sizes the planned segments;
    `hidden` and `segment_len`, when the user chose them, are kept and the rest is planned around them (the peak
    learning rate follows the order the run will read in, planned or chosen), as are `members` (the ensemble's
    size; None: as many networks as the clock trains for the planned passes, stepped `lanes` at a time: what a member's
    step costs beyond its arithmetic is spent on that many threads at once). `at_full_speed(width)` says whether
    the device trains that width at the speed `flops` counts (a bf16 class trains a width whose bf16 gradients are
    wrong in fp32); the plan takes the widest that fits and does, asking from the widest fitting one down.
    """

    def count(width: int) -> int:
        return parameters(vocab_size=vocab_size, hidden=width, layers=layers, embedding=embedding, skip=skip, cell=cell)

    # Only a clock budget is capped: --steps and --epochs say exactly how much to read.
    capped = bool(budget.minutes) and not budget.steps and not budget.epochs
    most_passes = max_epochs(corpus_chars, batch_chars)

    def chars_read(width: int, networks: int = 1) -> float:  # by each of `networks` trained side by side
        limits = [most_passes * corpus_chars] if capped else []
        if budget.steps:
            limits.append(budget.steps * batch_chars)
        if budget.epochs:
            limits.append(budget.epochs * corpus_chars)
        if budget.minutes:
            limits.append(budget.minutes * 60 * flops / (6 * count(width) * networks))
        return min(limits) if limits else math.inf

    def enough_fresh_text(width: int) -> bool:
        # --steps and --epochs fix the characters whatever the width; the clock gives a narrower model more of them
        return not capped or chars_read(width) >= min(corpus_chars, FRESH_CHARS_PER_PARAMETER * count(width))

    def enough_text_read(width: int) -> bool:
        # a run that reads its text MAX_EPOCHS times is limited by the text (max_parameters), not by what it reads
        return chars_read(width) >= min(CHARS_PER_PARAMETER * count(width), MAX_EPOCHS * corpus_chars)

    narrowed_from = split_from = None
    width_planned = hidden is None
    if width_planned:
        fitting = [w for w in WIDTHS if enough_text_read(w) and count(w) <= max_parameters(corpus_chars)
                   and enough_fresh_text(w)]
        allowed = max(fitting) if fitting else WIDTHS[0]
        hidden = next((w for w in reversed(fitting) if at_full_speed(w)), WIDTHS[0])
        narrowed_from = allowed if hidden != allowed else None
    if members is None:  # a clock budget longer than the passes need trains more networks in the rest of it
        alone = chars_read(hidden)
        member_seconds = 6 * count(hidden) * alone / flops + alone / batch_chars * MEMBER_STEP_SECONDS / lanes
        at_speed = MEMBERS_AT_SPEED * budget.minutes * 60 / member_seconds if capped else 0.0
        members = max(1, min(MAX_MEMBERS, math.floor(at_speed)))
        if (members == 1 and capped and width_planned and hidden >= SPLIT_FROM_WIDTH and lanes >= SPLIT_MEMBERS
                and alone / max(1, corpus_chars) >= WEIGHT_DROP_FROM_EPOCHS):
            # one network would learn its text by heart: the same arithmetic trains SPLIT_MEMBERS narrower ones
            split_from, hidden = hidden, next(w for w in reversed(WIDTHS) if w < hidden and at_full_speed(w))
            members = SPLIT_MEMBERS
    # what each network reads: members share the clock (those the rule above planned read their passes in it anyway)
    chars = chars_read(hidden, networks=members)
    epochs = chars / max(1, corpus_chars)
    weight_drop = WEIGHT_DROP if epochs >= WEIGHT_DROP_FROM_EPOCHS else 0.0

    def shuffled(length: int) -> bool:  # the order data.StreamBatches will read in, whatever was asked for
        return reads_in_segments(corpus_chars, batch_chars // seq_len, seq_len, length)

    fresh = epochs < FRESH_BELOW_EPOCHS  # never reads a character twice
    if segment_len is None:
        windows = (FRESH_SEGMENT_WINDOWS if fresh else
                   LONG_SEGMENT_WINDOWS if epochs >= LONG_SEGMENTS_FROM_EPOCHS else SEGMENT_WINDOWS)
        # the planned length, else four windows where the text is too short to shuffle it; else char-rnn's slices
        segment_len = next((w * seq_len for w in (windows, SEGMENT_WINDOWS) if shuffled(w * seq_len)), 0)
    lr = (FRESH_LR if fresh else SHUFFLED_LR) if shuffled(segment_len) else TrainConfig.lr
    steps = chars / batch_chars
    if members >= MEMBERS_WEIGHT_DROP_FROM and weight_drop:  # the mixture averages away part of each one's over-fit
        at_step_floor = capped and most_passes > MOST_EPOCHS  # a few hundred steps: slowed more than over-fit
        weight_drop = (FLOOR_MEMBERS_WEIGHT_DROP if at_step_floor and members >= FLOOR_MEMBERS_FROM else
                       MANY_MEMBERS_WEIGHT_DROP if members >= MANY_MEMBERS_FROM else MEMBERS_WEIGHT_DROP)
    eval_every = max(50, round(steps / VALIDATIONS_PER_RUN / 50) * 50) if math.isfinite(steps) else 100
    return Plan(hidden=hidden, weight_drop=weight_drop, segment_len=segment_len, lr=lr,
                eval_every=eval_every, chars=chars, epochs=epochs,
                max_epochs=most_passes if capped and chars >= most_passes * corpus_chars else None,
                narrowed_from=narrowed_from, members=members, split_from=split_from)
