"""Video rewards: optical-flow heads (direction, temporal consistency, smoothness,
motion amount), frame-to-frame CLIP consistency, image rewards lifted to frames."""
