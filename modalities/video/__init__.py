"""Video: frames [B, F, C, H, W] float32 in [0, 1] at a frame rate (:class:`Video`), GIF
and MP4 writers, frame sampling for rewards, and the built-in moving-shapes task."""
