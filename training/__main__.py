"""`python -m training`: the same as `maskwatch train`."""

from training.cli import train_main

raise SystemExit(train_main())
