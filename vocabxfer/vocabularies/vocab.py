"""A tokenizer's string vocabulary, as every other module sees it. Reading
one from whatever the user has is readers.py's job."""

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple

from vocabxfer.vocabularies import families
from vocabxfer.errors import VocabError

BRACKETED = re.compile(r"\[[A-Za-z0-9_]+\]")


@dataclass(frozen=True)
class Vocab:
    """A vocabulary: token string by id and id by token string, the special
    tokens and their roles, the added tokens and the tokenizer family.

    ``special_tokens_map`` maps a role (``pad``, ``unk``, ``cls``, ``sep``,
    ``mask``, ``bos``, ``eos``) to its token, as transformers'
    ``special_tokens_map`` does; ``all_special_tokens`` holds every special
    token, named role or not.

    ``tokenizer`` is a tokenizer that splits text by this vocabulary's rules
    (a ``tokenizers.Tokenizer`` or a transformers tokenizer): the one it was
    read from, or, for a bare WordPiece vocabulary, BERT's pipeline over it.
    It is built on first use (``loader``): matching alone never pays for it.

    ``lowercase`` and ``strip_accents`` say whether the tokenizer folds case
    and strips accents: as its configuration declares them
    (``declared_lowercase``, ``declared_strip_accents``), or, where nothing
    declares them (a bare vocab.txt), as the tokens show, worked out on first
    use.

    ``settings`` are what a transformers tokenizer carries beside the
    vocabulary (its chat template, length limit, padding and truncation
    sides: see tokenizer_settings.py), as the folder or tokenizer it was
    read from holds them.
    """

    tokens: Tuple[str, ...]
    ids: Dict[str, int]
    name: str
    family: str = families.UNKNOWN
    special_tokens_map: Dict[str, str] = field(default_factory=dict)
    all_special_tokens: FrozenSet[str] = frozenset()
    added_tokens: FrozenSet[str] = frozenset()
    continuation_prefix: str = "##"
    declared_lowercase: Optional[bool] = False
    declared_strip_accents: Optional[bool] = None
    loader: Optional[Callable[[], Any]] = field(default=None, compare=False, repr=False)
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def tokenizer(self) -> Any:
        return self.loader() if self.loader is not None else None

    @cached_property
    def lowercase(self) -> bool:
        if self.declared_lowercase is not None:
            return self.declared_lowercase
        return detect_lowercase(self.tokens)

    @property
    def strip_accents(self) -> bool:
        """As declared; an uncased vocabulary that declares nothing strips
        accents too, as BERT's uncased tokenizers do."""
        if self.declared_strip_accents is not None:
            return self.declared_strip_accents
        return self.lowercase

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.ids

    def __repr__(self) -> str:
        return (f"Vocab({self.name!r}, size={len(self)}, family={self.family!r}, "
                f"special_tokens_map={self.special_tokens_map})")

    def role_of(self, token: str) -> Optional[str]:
        for role, special in self.special_tokens_map.items():
            if special == token:
                return role
        return None

    def id_of_role(self, role: str) -> Optional[int]:
        """The id of the role's token, or None if the vocabulary has none."""
        token = self.special_tokens_map.get(role)
        return self.ids.get(token) if token is not None else None


def tokens_by_id(mapping: Mapping[str, int], name: str) -> Tuple[str, ...]:
    """The mapping's tokens ordered by id; ids must be exactly 0..size-1."""
    return indexed(mapping, name)[0]


def indexed(mapping: Mapping[str, int], name: str,
            from_json: bool = False) -> Tuple[Tuple[str, ...], Dict[str, int]]:
    """(tokens by id, id by token) of a {token: id} mapping whose ids must be
    exactly 0..size-1. A mapping listed in id order (as tokenizer.json lists
    it) is used as it is. ``from_json``: a dict fresh from json.loads, whose
    keys are strings and which may be kept as it is."""
    if not mapping:
        raise VocabError(f"{name}: the vocabulary is empty")
    size = len(mapping)
    valid_types = (from_json or set(map(type, mapping)) == {str}) and \
        set(map(type, mapping.values())) == {int}
    if valid_types and list(mapping.values()) == list(range(size)):
        return tuple(mapping), mapping if from_json else dict(mapping)
    tokens: List[Optional[str]] = [None] * size
    if valid_types:
        for token, index in mapping.items():
            if 0 <= index < size:
                tokens[index] = token
    if not valid_types or None in tokens:
        explain_bad_ids(mapping, name)
    ordered = tuple(tokens)  # type: ignore[arg-type]
    return ordered, dict(zip(ordered, range(size)))


def explain_bad_ids(mapping: Mapping[str, int], name: str) -> None:
    """Raise the error that says which token breaks the 0..size-1 rule."""
    size = len(mapping)
    owner: Dict[int, str] = {}
    for token, index in mapping.items():
        if not isinstance(token, str):
            raise VocabError(f"{name}: token {token!r} is not a string")
        if isinstance(index, bool) or not isinstance(index, int):
            raise VocabError(f"{name}: token {token!r} has id {index!r}, expected an int")
        if not 0 <= index < size:
            raise VocabError(f"{name}: token {token!r} has id {index}, but a vocabulary of "
                             f"{size} tokens needs ids 0..{size - 1} without gaps")
        if index in owner:
            raise VocabError(f"{name}: tokens {owner[index]!r} and {token!r} share id "
                             f"{index}; every id must name one token")
        owner[index] = token
    raise VocabError(f"{name}: ids are not 0..{size - 1}")  # pragma: no cover


def roles_from_strings(ids: Mapping[str, int]) -> Dict[str, str]:
    """Roles of the well-known special strings the vocabulary holds; where
    two strings claim a role, the lower id wins."""
    roles: Dict[str, str] = {}
    for token, role in families.ROLE_OF_STRING.items():
        if token in ids and (role not in roles or ids[token] < ids[roles[role]]):
            roles[role] = token
    return roles


def detect_lowercase(tokens: Tuple[str, ...]) -> bool:
    """A WordPiece vocab.txt does not say whether it is uncased; an uncased
    one holds no upper-case letters outside bracketed special tokens
    ([CLS], [unused0], ...)."""
    text = BRACKETED.sub("", "\n".join(tokens))
    return text == text.lower()
