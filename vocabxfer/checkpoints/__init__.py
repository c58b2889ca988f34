"""Checkpoints on disk: reading a stranger's folder safely (untrusted),
safetensors headers and rows, moving a checkpoint without loading it
(streamed), writing model and tokenizer folders (saving), and publishing a
folder whole or not at all, touching nothing a run did not make (atomic).

Kept light on import: the crash tests load ``atomic`` without torch."""
