"""Speech: waveforms [B, N] float32 in [-1, 1] at a sample rate, F5-TTS log-mel frames
[B, T, n_mels], vocoders back to waveforms, WAV I/O with soundfile."""
