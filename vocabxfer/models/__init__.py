"""A transformers model in memory: which of its tensors are
vocabulary-sized, loading one safely, checking a device, and moving a model
to a new vocabulary in place (``transfer_model``)."""
