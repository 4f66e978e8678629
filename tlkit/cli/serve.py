"""``tlkit serve RUN``: options -> ``make_server`` -> serve until Ctrl-C."""

from __future__ import annotations

import click

from tlkit.choices import SERVE_MAX_BATCH as MAX_BATCH
from tlkit.choices import SERVE_MAX_WAIT_MS as MAX_WAIT_MS
from tlkit.choices import SERVE_READ_TIMEOUT as READ_TIMEOUT


@click.command(short_help="Serve a run over HTTP: POST /predict, GET /health (JSON).")
@click.argument("run", type=click.Path())
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; the default takes requests from this machine only.")
@click.option("--max-batch", default=MAX_BATCH, show_default=True, type=int,
              help="Most inputs joined into one model call across concurrent requests.")
@click.option("--max-wait-ms", default=MAX_WAIT_MS, show_default=True, type=float,
              help="How long the first waiting request waits for others to join its batch.")
@click.option("--allow-paths", "allow_paths", metavar="DIR", type=click.Path(),
              help="Let requests name image files under DIR (symlinks and .. resolved); "
                   "without it, image runs take base64 images only.")
@click.option("--timeout", default=READ_TIMEOUT, show_default=True, type=float,
              help="Seconds a client has to send its request; a slower one gets 408.")
def serve(run: str, port: int, host: str, max_batch: int, max_wait_ms: float,
          allow_paths: str | None, timeout: float) -> None:
    """Serve a finished RUN's predictions as JSON until Ctrl-C.

    POST /predict (Content-Type: application/json) with {"inputs": [...], "top_k": 2}:
    base64 images for image runs (or files under --allow-paths DIR), sentences for text
    runs. The TF Serving / KServe v1 form {"instances": [...]} works too. GET /health says
    what is served. A request may add "coverage": 0.9 (and "conformal_score": "aps" or
    "lac") and "abstain_below": 0.8, as predict's options: each answer then says "answer"
    (a label, or unsure) and "candidates".

    Example:

      tlkit serve runs/trec --port 8080

      curl -s localhost:8080/predict -H 'Content-Type: application/json'
      -d '{"inputs": ["How far is the moon ?"], "top_k": 2}'
    """
    import signal

    from tlkit.serve import make_server

    server = make_server(run, host, port, max_batch, max_wait_ms, allow_paths, timeout)
    click.echo(f"serving {server.run.path} ({server.run.kind}) on {server.url}: "
               "POST /predict, GET /health; Ctrl-C stops")
    # Service managers (docker stop, Kubernetes, systemd) stop with SIGTERM: end as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
