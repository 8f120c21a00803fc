"""`python -m serving`: parse tensorflow_model_server's flags, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

# TensorFlow's C++ logging is noise on a service's stderr; ours is structured below.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from maskwatch.lifecycle import stop_event  # noqa: E402
from maskwatch.logs import setup_logging  # noqa: E402
from maskwatch.tfprotos import use_protos_only  # noqa: E402
from serving.settings import RUNTIME_OPENVINO, Settings, SettingsError, parse_settings  # noqa: E402

logger = logging.getLogger("serving")


def set_tensorflow_threads(settings: Settings, tf: Any = None) -> tuple[int, int]:
    """Size TensorFlow's thread pools as the flags say (0: TensorFlow's own choice) before any model runs; returns
    the (intra-op, inter-op) sizes in force."""
    if tf is None:
        from maskwatch.tfprotos import load_tensorflow

        tf = load_tensorflow()
    threading_config = tf.config.threading
    try:
        if settings.tensorflow_intra_op_parallelism:
            threading_config.set_intra_op_parallelism_threads(settings.tensorflow_intra_op_parallelism)
        if settings.tensorflow_inter_op_parallelism:
            threading_config.set_inter_op_parallelism_threads(settings.tensorflow_inter_op_parallelism)
    except RuntimeError:
        logger.warning("TensorFlow already running: thread pools unchanged")
    return (
        threading_config.get_intra_op_parallelism_threads(),
        threading_config.get_inter_op_parallelism_threads(),
    )


def run(settings: Settings, stop: threading.Event) -> int:
    """Serve until `stop` is set; the exit code."""
    if settings.runtime == RUNTIME_OPENVINO:
        # TF Serving's protos without TensorFlow's runtime (~700 MB): it loads only for a version that lacks the
        # OpenVINO networks (serving.servable.tensorflow)
        use_protos_only()
    from serving import servable
    from serving.server import ModelServer, StartupError

    def threads(tf: Any) -> None:
        intra, inter = set_tensorflow_threads(settings, tf)
        logger.info("tensorflow threads intra_op=%d inter_op=%d (0: one per core)", intra, inter)

    servable.on_tensorflow_load(threads)
    if settings.runtime != RUNTIME_OPENVINO:
        servable.tensorflow()  # loaded now, as tensorflow_model_server does, not at the first version
    server = ModelServer(settings)
    try:
        ready = server.start(stop)
    except StartupError as error:
        logger.error("startup failed error=%r", str(error))
        server.stop(0)
        return 1
    if ready:
        logger.info(
            "server ready grpc_port=%s rest_port=%s models=%s",
            server.grpc_port,
            server.rest_port or 0,
            ",".join(server.manager.model_names() if server.manager else []),
        )
        stop.wait()
    if not ready:
        # stopped while a model was still loading: TensorFlow cannot interrupt a load (20 s on a busy machine) and
        # nothing was served yet, so there is nothing to drain: `python -m serving` exits at once (os._exit)
        logger.info("shutdown requested while loading: exiting without waiting for the load")
        return 0
    logger.info("shutdown requested")
    server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: flags → Settings → server; SIGTERM and SIGINT stop it gracefully."""
    try:
        settings = parse_settings(argv)
    except SettingsError as error:
        print(f"python -m serving: error: {error}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level.upper(), service="serving")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    stop = stop_event()
    logger.info("server starting settings=%r", settings)
    return run(settings, stop)


if __name__ == "__main__":
    code = main()
    # Once the server has stopped, skip the interpreter's teardown of TensorFlow: it does nothing a stopped server
    # needs and takes seconds (over 5 on a busy 2-core machine), past the stack's 10 s stop budget.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
