"""Scenarios that need a full Stable Diffusion pipeline (diffusers): editing, protections through the
UNet, diffusion purifiers, style mimicry, and the worst case per image over purifiers."""
