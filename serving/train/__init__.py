"""`maskwatch train`: the fine-tuned model's architecture and weights files (model.py), training data and
augmentation (data.py), the detector (detector.py) and classifier (classifier.py) training loops, the command (cli.py)."""
