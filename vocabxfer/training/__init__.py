"""The target tokenizer when the user has only text: corpora streamed from
their files, and a tokenizer trained on them that follows the source's
pipeline, casing and special tokens."""
