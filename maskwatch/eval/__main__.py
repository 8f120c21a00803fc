"""`python -m maskwatch.eval`: the same as `maskwatch eval`."""

from maskwatch.eval.cli import eval_main

raise SystemExit(eval_main())
