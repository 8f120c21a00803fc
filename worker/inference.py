"""One batch's Predict as the worker needs it: started while the next batch is polled, awaited with retries while
the model server is down, asked frame by frame when the server refuses the batch (those frames dead-lettered)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc

from maskwatch.detections import Detections, ModelOutputError
from maskwatch.frames import ERR_MODEL_OUTPUT, ERR_UNDECODABLE, Frame
from maskwatch.intake import DeadLetter
from maskwatch.model_api import RETRYABLE, ModelClient, outputs_of, parse_outputs
from maskwatch.store import TP, BatchWrite
from worker.batch import refuse
from worker.health import Abandon, Health

logger = logging.getLogger(__name__)

# besides the transient codes: a model not loaded (yet) or being swapped is waited for too
WAITED_FOR = RETRYABLE | {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}


@dataclass
class InFlight:
    """A polled batch: the frames sent to the model, what was rejected, and the Predict future."""

    batch: BatchWrite
    frames: list[tuple[TP, Frame]]
    records: int
    future: Any = None
    dead: list[DeadLetter] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class Failed:
    """A future that already failed (the call could not even start)."""

    def __init__(self, err: grpc.RpcError) -> None:
        self.err = err

    def result(self) -> Any:
        raise self.err

    def done(self) -> bool:
        return True

    def cancel(self) -> bool:
        return False


class Inference:
    """The model client's Predict with the worker's patience: what is down is waited for, what is refused is not."""

    def __init__(self, model: ModelClient, health: Health, stop: threading.Event) -> None:
        self.model = model
        self.health = health
        self.stop = stop

    def submit(self, jpegs: list[bytes]) -> Any:
        try:
            return self.model.predict_future(jpegs)
        except grpc.RpcError as e:
            return Failed(e)

    def detections(self, p: InFlight) -> list[Detections | None]:
        """Detections per frame (None = the frame was dead-lettered); retries while the server is down."""
        attempt = 0
        jpegs = [f.jpeg for _, f in p.frames]
        future = p.future
        while True:
            try:
                resp = future.result()
                self.health.model_answered((time.monotonic() - p.started) * 1000)
                self.health.ok("model")
                try:
                    return list(parse_outputs(outputs_of(resp), len(jpegs)))
                except (ModelOutputError, ValueError) as e:
                    logger.warning("model output malformed frames=%d error=%s", len(jpegs), e)
                    return self._one_by_one(p, ERR_MODEL_OUTPUT)
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    return self._one_by_one(p, ERR_UNDECODABLE)
                if code not in WAITED_FOR:
                    raise
                self.health.degraded("model", f"{code.name}: {e.details() if hasattr(e, 'details') else e}")
                self.health.wait_backoff(attempt)
                attempt += 1
                if self.stop.is_set():
                    raise Abandon() from None
                p.started = time.monotonic()
                future = self.submit(jpegs)

    def _ask_one(self, jpeg: bytes) -> Any:
        return self.submit([jpeg]).result()

    def _one_by_one(self, p: InFlight, reason: str) -> list[Detections | None]:
        """A batch the server refused: ask per frame, dead-letter the frames that fail."""
        out: list[Detections | None] = []
        for part, frame in p.frames:
            try:
                resp = self.health.retry("model", partial(self._ask_one, frame.jpeg), give_up=(grpc.StatusCode.INVALID_ARGUMENT,))
                out.append(parse_outputs(outputs_of(resp), 1)[0])
            except (grpc.RpcError, ModelOutputError, ValueError) as e:
                logger.warning("frame rejected by model camera=%s seq=%d reason=%s error=%s", frame.camera_id, frame.seq, reason, e)
                p.dead.append(refuse(p.batch, part, frame, reason))
                out.append(None)
        return out
