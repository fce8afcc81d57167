"""Train and evaluate policies from the command line (`blis-gym train`, `blis-gym eval`).

- `policies`: a policy spec (heuristic name, `random`, checkpoint, `module:function`) -> an actor;
- `split`: the generalisation split of an environment spec (train / validation / eval);
- `evaluate`: policy × scenario × seed episodes in parallel, paired by seed;
- `stats`: means with 95% intervals, paired bootstrap differences and win rates;
- `report`: results.csv, summary.json, report.md and plots;
- `train`: SB3 / sb3-contrib training with held-out validation and a recorded configuration;
- `rllib`: the same recipes on Ray RLlib (`backend: rllib`), and the multi-agent env under RLlib;
- `exported`: exported policies (`*.pt2`, what the RLlib backend writes), played by `eval`;
- `cli`: the click commands.
"""
