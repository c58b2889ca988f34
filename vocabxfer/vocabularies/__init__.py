"""Vocabularies as every other part sees them: a ``Vocab`` read once from
whatever the user has (readers), the tokenizer families and the
family-neutral form of a token (families), the token map between a
source and a target vocabulary with its report (matching), a
vocabulary's tokenizer as a transformers fast tokenizer (as_transformers),
and the settings it carries beside its vocabulary, such as its chat
template (tokenizer_settings)."""
