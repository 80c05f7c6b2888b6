"""Probability: the distributions of the seed's model, registered KLs and soft bounds on log-variances."""
