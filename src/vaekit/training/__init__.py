"""Training: options (:mod:`.config`), the loop (:func:`fit`, :mod:`.loop`), one step (:mod:`.step`),
its state and metrics (:mod:`.state`), the stop signals Ctrl-C, SIGTERM and SIGHUP (:mod:`.interrupts`),
each step's examples and random numbers (:mod:`.batches`) and the torchrun / DDP process group
(:mod:`.distributed`)."""

from vaekit.training.config import PRECISIONS, SCHEDULES, TrainConfig, kl_beta, lr_factor
from vaekit.training.interrupts import TrainingInterrupted
from vaekit.training.loop import MAX_BAD_STEPS, DivergenceError, fit
from vaekit.training.state import METRIC_FIELDS, EpochMetrics, FitResult

__all__ = ["fit", "TrainConfig", "EpochMetrics", "FitResult", "DivergenceError", "METRIC_FIELDS", "PRECISIONS",
           "SCHEDULES", "MAX_BAD_STEPS", "TrainingInterrupted", "kl_beta", "lr_factor"]
