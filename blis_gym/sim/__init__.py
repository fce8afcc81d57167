"""The discrete-event simulator of an llm-d cluster (numpy, PyYAML and the standard library only).

Start reading here (docs/architecture.md is the full map):

- `simulation.py`: `Simulation` wires a `SimConfig` together and owns the request lifecycle:
  arrival -> gateway -> instance -> exactly one final state; `run()` returns summary.json.
- `core.py`: the integer-µs clock, the event heap ordered by (time, priority, sequence), and
  named random streams, so one seed gives one result.
- `slots.py`: the Protocols of the policy slots (step-time model, admission, router, P/D
  decider, autoscaler); built-ins are registered by name in `blis_gym.policies.registry`.
- `cluster/`: the gateway (admission, flow control, routing), the P/D state machine
  (`disagg.py`), KV transfers, pools; `host.py` lists what they call back on the Simulation.
- `engine/`: one vLLM instance (continuous batching, paged prefix-cached KV).
- `latency/`, `workload/`, `metrics/`: step times, request streams, records and summaries.
"""
