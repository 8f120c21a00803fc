"""MaskWatch benchmarks (`make bench`); figures, not tests.

`python -m bench`           the suite → results/latest.json, latest.md, latency_hist.png, scaling.png
`python -m bench --soak`    the soak  → soak figures merged into latest.json/md, soak_memory.png
`python -m bench.serving`   model server vs in-process model → results/serving.json/md
`python -m bench.worker`    one worker vs the model server → results/worker.json/md (--profile: py-spy)
`python -m bench.sleep_model` a SavedModel that sleeps a fixed wall time per call (for scaling runs)

frames.py     the 640×480 frames with 1–4 faces      stats.py    percentiles, medians, rates, latency matching
stack.py      names, model servers, workers (procs)    feeder.py   frames into Kafka, accounting out of Redis
inprocess.py  the model and the naive baseline in process   load.py  closed-loop gRPC clients
pipeline.py   saturation drains and latency            scaling.py  1/2/4/8 workers on the sleep model
soak.py       the long run                             suite.py    the order of the suite, headline figures
report.py     JSON, Markdown, charts, machine and commit
"""
