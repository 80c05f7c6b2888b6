"""Models: the latent-model protocol (:mod:`.protocol`) and the VAE built on it: its configuration,
architectures (function families F, G, H), encoders, decoders, likelihoods, decoder variance c,
and the exact linear-Gaussian case."""
