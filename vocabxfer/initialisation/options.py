"""How the target rows start, as one option object: the rule for unmatched
tokens, the matching rule, FVT's piece weights, and the seed of the sampled
rules. Checked where it is made."""

from dataclasses import dataclass
from typing import Any, Dict, Optional

from vocabxfer.errors import VocabxferError
from vocabxfer.initialisation.fvt import DEFAULT_PIECE_WEIGHTS, PIECE_WEIGHTS, PieceWeighting
from vocabxfer.initialisation.plan import INITS
from vocabxfer.models.in_memory import check_seed
from vocabxfer.vocabularies.matching import MODES


@dataclass(frozen=True)
class InitOptions:
    """``init``: what an unmatched token starts as (fvt, mean, normal,
    random). ``match``: how tokens are matched (exact, canonical).
    ``piece_weights`` / ``output_piece_weights``: how FVT weighs a token's
    pieces (in the input embeddings / in an untied output layer; a name of
    PIECE_WEIGHTS, or a callable, see plan_initialisation). ``seed``: the
    sampled rules' seed."""

    init: str = "fvt"
    match: str = "exact"
    piece_weights: PieceWeighting = DEFAULT_PIECE_WEIGHTS
    output_piece_weights: Optional[PieceWeighting] = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise VocabxferError(f"init {self.init!r} is not one of {', '.join(INITS)}")
        if self.match not in MODES:
            raise VocabxferError(f"match {self.match!r} is not one of {', '.join(MODES)}")
        for name in ("piece_weights", "output_piece_weights"):
            value = getattr(self, name)
            if isinstance(value, str) and value not in PIECE_WEIGHTS:
                raise VocabxferError(f"{name} {value!r} is not one of "
                                     f"{', '.join(PIECE_WEIGHTS)}, or a callable")
        check_seed(self.seed)

    def keywords(self) -> Dict[str, Any]:
        """The keyword arguments of transfer_model and transfer_checkpoint."""
        return dict(init=self.init, mode=self.match, seed=self.seed,
                    piece_weights=self.piece_weights,
                    output_piece_weights=self.output_piece_weights)
