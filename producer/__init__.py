"""MaskWatch producer."""
