"""Model serving: export of the mask-detector SavedModel, its signature, and the TF-Serving-compatible server."""
