"""`maskwatch train`: training data and augmentation (data.py), the detector (detector.py) and classifier
(classifier.py) training loops, hard negatives (negatives.py), the command (cli.py); and beside it the evaluation
that measures what it makes (eval/, `maskwatch eval`). The weights it writes are in the model's format (model.tuned)."""
