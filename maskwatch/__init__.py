"""What every MaskWatch service shares: the frame contract, the Redis schema, settings, logging and the CLI."""
