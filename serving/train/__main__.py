"""`python -m serving.train`: the same as `maskwatch train`."""

from serving.train.cli import train_main

raise SystemExit(train_main())
