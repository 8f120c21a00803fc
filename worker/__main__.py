"""`python -m worker`: one consumer-group member turning frames into counts."""

from __future__ import annotations

import sys

from maskwatch.tfprotos import use_protos_only

use_protos_only()  # before anything imports tensorflow_serving: the worker needs its protos, not the runtime

from pydantic import ValidationError  # noqa: E402

from maskwatch.lifecycle import stop_event  # noqa: E402
from maskwatch.logs import setup_logging  # noqa: E402
from maskwatch.settings import settings_from_argv  # noqa: E402
from worker.app import run  # noqa: E402
from worker.settings import WorkerSettings  # noqa: E402


def parse_settings(argv: list[str] | None = None) -> WorkerSettings:
    """Flags over MW_* environment variables, as the process runs with them; raises ValidationError."""
    flags = ("kafka", "redis_url", "serving", "topic", "group", "worker_id", "max_poll_records", "max_frame_age_s")
    return settings_from_argv(WorkerSettings, argv, "python -m worker", __doc__, *flags)


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
