"""Images: float tensors [B, C, H, W] with values in [0, 1]; PNG grids; built-in digits data."""
