"""The synthetic-text detector: features, model, training, evaluation."""
