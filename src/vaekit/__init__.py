"""vaekit."""
