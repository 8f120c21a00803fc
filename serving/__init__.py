"""The model server (`python -m serving`): TF Serving's gRPC and REST APIs over any exported SavedModel (versions,
batching, warm-up, metrics), run by TensorFlow, or by OpenVINO for versions that carry its networks."""
