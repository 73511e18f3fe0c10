"""Per-modality media containers, codecs, I/O and built-in data (image, video, speech)."""
