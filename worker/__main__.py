"""`python -m worker`: one consumer-group member turning frames into counts."""

from __future__ import annotations

import argparse
import sys

from maskwatch.tfprotos import use_protos_only

use_protos_only()  # before anything imports tensorflow_serving: the worker needs its protos, not the runtime

from pydantic import ValidationError  # noqa: E402

from maskwatch.lifecycle import stop_event  # noqa: E402
from maskwatch.logs import setup_logging  # noqa: E402
from worker.app import run  # noqa: E402
from worker.settings import WorkerSettings  # noqa: E402


def parse_settings(argv: list[str] | None = None) -> WorkerSettings:
    """Flags over MW_* environment variables, as the process runs with them; raises ValidationError."""
    ap = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    ap.add_argument("--kafka", help="bootstrap servers (env MW_KAFKA)")
    ap.add_argument("--redis-url", help="Redis URL (env MW_REDIS_URL)")
    ap.add_argument("--serving", help="model server host:port (env MW_SERVING)")
    ap.add_argument("--topic")
    ap.add_argument("--group")
    ap.add_argument("--worker-id")
    ap.add_argument("--max-poll-records", type=int)
    ap.add_argument("--max-frame-age-s", type=float)
    args = ap.parse_args(argv)
    return WorkerSettings(**{k: v for k, v in vars(args).items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except ValidationError as e:
        print(f"error: bad worker settings:\n{e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format, "worker")
    stop = stop_event()
    return run(settings, stop)


if __name__ == "__main__":
    sys.exit(main())
