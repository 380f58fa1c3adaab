"""Models the project ships (data files): taef2, FLUX.2's tiny autoencoder (taef2/README.md)."""
