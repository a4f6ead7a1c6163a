"""Training: the trainer wrapper, its callbacks and the chunked causal-LM loss."""

from sc2tune.training.run import TrainResult, train

__all__ = ["TrainResult", "train"]
