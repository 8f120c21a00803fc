"""MaskWatch worker."""
