"""`maskwatch eval`: VOC data sets (dataset.py), the train/validation split (split.py), detection metrics
(metrics.py), running a model in process or over gRPC (runner.py), the report (report.py), the command (cli.py)."""
