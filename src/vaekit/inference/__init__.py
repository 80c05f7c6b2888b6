"""Inference: objectives (ELBO, IWAE bound), estimators (log p(x), posterior gap, active units,
bits/dim) and the evaluation of a trained model; functions of the model protocol only."""
