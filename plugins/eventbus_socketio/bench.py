"""``eventbus bench``: latency, sustained deliveries/s, memory per connection, HTTP publish,
webhooks and Redis scale-out, against plain Flask-SocketIO and Node Socket.IO baselines.

The suite lives in the repository's ``benchmarks/`` folder (servers, load clients, pinned npm
packages); this command finds it next to the package or through ``--bench-dir``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def _suite(bench_dir: str | None):  # returns the benchmarks module (loaded from a path)
    candidates = [Path(bench_dir)] if bench_dir else [
        Path(__file__).resolve().parents[2] / "benchmarks", Path.cwd() / "benchmarks"]
    for path in candidates:
        if (path / "socketio_bench.py").is_file():
            sys.path.insert(0, str(path))
            import socketio_bench

            return socketio_bench
    raise click.ClickException("benchmarks/socketio_bench.py not found: run from an eventbus checkout "
                               "or pass --bench-dir")


def _ints(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


@click.command("bench")
@click.option("--quick", is_flag=True, help="Short runs and small counts: about two minutes.")
@click.option("--modes", default=None, help="Async modes, comma-separated (default threading,gevent,eventlet).")
@click.option("--clients", default=None, help="Client counts for the latency table, e.g. 10,100.")
@click.option("--rates", default=None, help="Offered deliveries/s (events/s x clients), e.g. 1000,5000.")
@click.option("--ladder", default=None, help="Offered deliveries/s steps for the sustained search ('' = skip).")
@click.option("--ladder-clients", type=int, default=None, help="Clients during the sustained search (default 100).")
@click.option("--duration", type=float, default=None, help="Seconds per measured run.")
@click.option("--memory", "memory_connections", default=None,
              help="Idle connection counts for memory per connection, e.g. 1000,5000,10000 ('' = skip).")
@click.option("--generator", type=click.Choice(["auto", "node", "python"]), default="auto", show_default=True,
              help="Load generator: the npm socket.io-client under Node, or python-socketio threads.")
@click.option("--workers", type=int, default=1, show_default=True, help="Load generator processes.")
@click.option("--batch-window-ms", type=int, default=10, show_default=True,
              help="EVENTBUS_BATCH_WINDOW_MS of the batched scenario.")
@click.option("--no-batched", is_flag=True, help="Skip the batched scenario.")
@click.option("--no-node", is_flag=True, help="Skip the Node Socket.IO baseline.")
@click.option("--no-flask", is_flag=True, help="Skip the plain Flask-SocketIO baseline.")
@click.option("--http-seconds", type=float, default=None, help="Seconds of HTTP publish load (0 = skip).")
@click.option("--webhook-events", type=int, default=None, help="Events for the webhook run (0 = skip).")
@click.option("--webhook-endpoints", default=None, help="Receiver counts for the webhook runs, e.g. 1,4.")
@click.option("--redis-url", default=None, help="Redis database for the scale-out run ('' = skip); "
              "it is flushed (default redis://127.0.0.1:6379/14, not in --quick).")
@click.option("--profile", "profile_dir", default=None, type=click.Path(file_okay=False),
              help="Record py-spy profiles of eventbus servers at saturation into this folder.")
@click.option("--soak", is_flag=True, help="Also hold 10k idle gevent connections for 5 minutes.")
@click.option("--soak-connections", type=int, default=10000, show_default=True)
@click.option("--soak-seconds", type=float, default=300.0, show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write every result as JSON.")
@click.option("--bench-dir", default=None, help="The benchmarks/ folder (found automatically in a checkout).")
def bench_command(quick: bool, modes: str | None, clients: str | None, rates: str | None, ladder: str | None,
                  ladder_clients: int | None, duration: float | None, memory_connections: str | None, generator: str, workers: int,
                  batch_window_ms: int, no_batched: bool, no_node: bool, no_flask: bool,
                  http_seconds: float | None, webhook_events: int | None, webhook_endpoints: str | None,
                  redis_url: str | None,
                  profile_dir: str | None, soak: bool, soak_connections: int, soak_seconds: float,
                  output: str | None, bench_dir: str | None) -> None:
    """Measure Socket.IO delivery against plain Flask-SocketIO and Node Socket.IO baselines."""
    suite = _suite(bench_dir)
    opts = suite.Options.quick() if quick else suite.Options()
    overrides = {
        "modes": modes.split(",") if modes else None, "clients": _ints(clients), "rates": _ints(rates),
        "ladder": _ints(ladder), "duration": duration, "memory_connections": _ints(memory_connections),
        "http_seconds": http_seconds, "webhook_events": webhook_events, "ladder_clients": ladder_clients,
        "webhook_endpoints": _ints(webhook_endpoints),
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(opts, key, value)
    if redis_url is not None:
        opts.redis_url = redis_url or None
    opts.generator, opts.workers, opts.batch_window_ms = generator, workers, batch_window_ms
    opts.batched, opts.node_baseline, opts.flask_baseline = not no_batched, not no_node, not no_flask
    opts.profile_dir, opts.soak = profile_dir, soak
    opts.soak_connections, opts.soak_seconds = soak_connections, soak_seconds
    opts.log = lambda line: click.echo(line, err=True)
    unknown = set(opts.modes) - {"threading", "gevent", "eventlet"}
    if unknown:
        raise click.BadParameter(f"unknown async mode(s): {', '.join(sorted(unknown))}", param_hint="--modes")
    results = suite.run(opts)
    click.echo(suite.render(results))
    if output:
        Path(output).write_text(json.dumps(results, indent=2, default=str))
        click.echo(f"\nresults written to {output}")
