"""`blis-gym observe`: drive a real OpenAI-compatible server with a scenario's workload and record
what `validate` replays."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from ..errors import ConfigError
from ..sim.limits import MAX_SEED
from .common import err_console, fail


@click.command()
@click.option("--url", required=True,
              help="The server's base URL (vLLM or llm-d's gateway), e.g. http://localhost:8000.")
@click.option("--workload", "workload", required=True,
              help="A bundled scenario's name or a scenario file: its workload (and seed) is what is sent.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for observed_requests.csv, observed_meta.json, observed_itl.jsonl and metrics.csv.")
@click.option("--api", type=click.Choice(["completions", "chat"]), default="completions", show_default=True,
              help="/v1/completions or /v1/chat/completions (both streamed).")
@click.option("--model", default=None, help="The served model to ask for (default: the first of /v1/models).")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None, help="Override the scenario's seed.")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=256, show_default=True,
              help="Requests in flight at most; a request due while all are busy waits (its send time is recorded).")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop sending after this many seconds (the ones in flight finish).")
@click.option("--max-requests", type=click.IntRange(min=1), default=None, help="Stop after sending this many.")
@click.option("--request-timeout", "request_timeout_s", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, help="Seconds a request may take (the scenario's timeout_s when shorter).")
@click.option("--drain-timeout", "drain_timeout_s", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="After Ctrl-C: seconds to wait for the requests in flight before cancelling them.")
@click.option("--metrics-url", default=None,
              help="Where to scrape Prometheus /metrics (default: --url; e.g. a vLLM pod behind a gateway).")
@click.option("--no-metrics", is_flag=True, help="Do not scrape /metrics.")
@click.option("--metrics-interval", "metrics_interval_s", type=click.FloatRange(min=0.1), default=2.0,
              show_default=True, help="Seconds between scrapes.")
@click.option("--no-ignore-eos", is_flag=True,
              help="Do not send vLLM's ignore_eos/min_tokens (output lengths then end at EOS).")
@click.option("--hardware", default=None, help="For validate: the server's GPU (H100, A100-80GB, ...).")
@click.option("--tp", type=click.IntRange(1, 64), default=None,
              help="For validate: the server's tensor-parallel degree.")
@click.option("--kv-blocks", type=click.IntRange(min=2), default=None, help="For validate: the server's GPU KV blocks.")
@click.option("--max-num-seqs", type=click.IntRange(min=1), default=None, help="For validate: vLLM max_num_seqs.")
@click.option("--max-num-batched-tokens", type=click.IntRange(min=1), default=None,
              help="For validate: vLLM max_num_batched_tokens.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def observe(url, workload, out_dir, api, model, seed, max_concurrency, duration_s, max_requests, request_timeout_s,
            drain_timeout_s, metrics_url, no_metrics, metrics_interval_s, no_ignore_eos, hardware, tp, kv_blocks,
            max_num_seqs, max_num_batched_tokens, quiet) -> None:
    """Drive a real OpenAI-compatible server with a scenario's workload (the requests `blis-gym
    run` simulates for that seed) and record each request's send time, TTFT, inter-token times
    and E2E in the per-request format `blis-gym validate` replays. Ctrl-C stops sending and keeps
    what was recorded (exit status 130)."""
    from ..observe import ObserveConfig
    from ..observe import observe as run_observe

    def log(msg: str) -> None:
        if not quiet or msg.startswith("warning"):
            err_console.print(msg, highlight=False, soft_wrap=True)

    cfg = ObserveConfig(url=url, workload=workload, out_dir=out_dir, api=api, model=model, seed=seed,
                        max_concurrency=max_concurrency, duration_s=duration_s, max_requests=max_requests,
                        request_timeout_s=request_timeout_s, drain_timeout_s=drain_timeout_s,
                        metrics_url="" if no_metrics else metrics_url, metrics_interval_s=metrics_interval_s,
                        ignore_eos=not no_ignore_eos,
                        engine={"hardware": hardware, "tp": tp, "kv_blocks": kv_blocks, "max_num_seqs": max_num_seqs,
                                "max_num_batched_tokens": max_num_batched_tokens})
    try:
        meta = run_observe(cfg, log)
    except ConfigError as e:
        fail(str(e))
    except KeyboardInterrupt:             # before the first request: nothing to keep
        err_console.print("interrupted before anything was sent", highlight=False)
        sys.exit(130)
    by = ", ".join(f"{n} {s}" for s, n in meta["requests_by_status"].items()) or "none"
    if not quiet:
        Console().print(f"{meta['requests_sent']} requests sent ({by}); {meta['stopped']}; wrote {out_dir}/",
                        highlight=False)
    if meta["interrupted"]:
        sys.exit(130)
