"""Dead letters: the envelope, the drain into the store, review, corrections and replay."""
