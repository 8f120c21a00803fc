"""`python -m training.eval`: the same as `maskwatch eval`."""

from training.eval.cli import eval_main

raise SystemExit(eval_main())
