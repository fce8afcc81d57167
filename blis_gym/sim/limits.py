"""The bounds of every input (documented in docs/scenarios.md): plain numbers, shared by the
scenario schema (blis_gym.schema.bounded), the trace and workload-spec readers and the CLI.

The simulator keeps time in whole microseconds, so a duration is either 0 (where 0 has a
meaning: no timeout, oracle signals, no delay) or between 1 µs and MAX_DURATION_S; anything
shorter would round to 0 and could reschedule a periodic event at the same instant forever.
Counts and sizes have upper bounds that keep a run inside memory and time.
"""
MAX_DURATION_S = 1e7           # about 116 days of simulated time
MIN_DURATION_S = 1e-6          # the simulator's tick
MIN_SAMPLE_INTERVAL_S = 1e-3   # time-series rows: at most 1,000 per simulated second
MIN_AUTOSCALER_INTERVAL_S = 0.1   # a control loop, not a per-request decision
MAX_WINDOW_TICKS = 100_000     # an autoscaler's stabilization window, in ticks
MIN_RATE = 1e-3                # requests per second (one every ~17 minutes)
MAX_RATE = 1e6                 # one request per microsecond
MAX_INSTANCES = 4096           # per pool (slots up to max_instances) and cluster.instances
MAX_USERS = 1_000_000          # closed-loop users of one client
MAX_TURNS = 10_000             # turns of one session
MAX_REQUESTS = 100_000_000     # about 300 bytes of memory per request
MAX_TOKENS = 1 << 30           # a prompt or output length
MAX_COUNT = 1 << 31            # other integer sizes (KV blocks, queue capacities, batch limits)
MAX_SEED = (1 << 63) - 1
MAX_NUMBER = 1e13              # any number in a BLIS workload spec (µs times up to MAX_DURATION_S)
