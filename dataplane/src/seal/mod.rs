//! Per-frame sealing: ChaCha20-Poly1305, key epochs, replay windows.
