"""BPE merges learned on top of a tokenizer's own segmentation.

A merge appended after a BPE tokenizer's merges fires only on what the
source's merges leave: the source's final segmentation of each word
(pre-token). So that is where the merges to append are learned: the corpus
is encoded by the source tokenizer, each word read as the source's tokens,
and the most frequent adjacent pair is merged, again and again (BPE
training, continued). Learned this way, a merge fires on the text it was
learned on (none is rank-dead), and the compression is what greedy BPE
gives on the segmentation the extended tokenizer will really start from,
not on a fresh tokenizer's.

A pair is passed over (and counted) when it is adjacent somewhere in the
text to keep: no merge then fires there, so that text is encoded exactly as
before. The caller can refuse others (`refuse`: for instance a pair joining
a digit, for a source that reads numbers digit by digit); so is a pair
whose token already exists (one string, one id).
"""

import heapq
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from tqdm.auto import tqdm

Pair = Tuple[str, str]
BATCH = 2048


@dataclass
class ContinuedMerges:
    """The merges learned, in order, and the best pairs passed over."""

    merges: List[Pair]
    kept_text: List[str] = field(default_factory=list)  # adjacent in the text to keep
    refused: List[str] = field(default_factory=list)  # refused by the caller's rule


def word_counts(encoder: Any, passages: Iterable[str]) -> Counter:
    """How often each word (pre-token) occurs, as the source's tokens."""
    counts: Counter = Counter()
    batch: List[str] = []

    def count(texts: List[str]) -> None:
        for encoding in encoder.encode_batch(texts, add_special_tokens=False):
            word, tokens = None, []
            for token, index in zip(encoding.tokens, encoding.word_ids):
                if index != word and tokens:
                    counts[tuple(tokens)] += 1
                    tokens = []
                word = index
                if index is not None:  # an added token in the text is no word
                    tokens.append(token)
            if tokens:
                counts[tuple(tokens)] += 1

    for passage in passages:
        batch.append(passage)
        if len(batch) == BATCH:
            count(batch)
            batch = []
    if batch:
        count(batch)
    return counts


def merged(symbols: List[str], pair: Pair, token: str) -> List[str]:
    """The word with every occurrence of `pair` merged, left to right."""
    left, right = pair
    out: List[str] = []
    position, end = 0, len(symbols)
    while position < end:
        try:
            found = symbols.index(left, position)
        except ValueError:
            out.extend(symbols[position:])
            break
        if found + 1 < end and symbols[found + 1] == right:
            out.extend(symbols[position:found])
            out.append(token)
            position = found + 2
        else:
            out.extend(symbols[position:found + 1])
            position = found + 1
    return out


def joiner(continuing_subword_prefix: Optional[str]) -> Callable[[str, str], str]:
    """How a BPE model spells the token a merge makes: the two parts side by
    side, the right one without its continuation prefix ("##") if it has one."""
    prefix = continuing_subword_prefix or ""

    def join(left: str, right: str) -> str:
        return left + (right[len(prefix):] if prefix and right.startswith(prefix) else right)

    return join


def learn_merges(encoder: Any, passages: Iterable[str], count: int, *,
                 existing: Set[str], min_frequency: int = 2, keep: Sequence[str] = (),
                 refuse: Optional[Callable[[str], bool]] = None,
                 join: Callable[[str, str], str] = joiner(None),
                 show_progress: bool = False) -> ContinuedMerges:
    """Up to `count` merges, most frequent first, on the source `encoder`'s
    segmentation of `passages` (a ``tokenizers.Tokenizer``); none made of a
    pair that occurs fewer than `min_frequency` times, none whose token
    (`join` of the pair) is in `existing` or is `refuse`d, none adjacent in
    `keep`'s encoding."""
    words = [(list(word), frequency) for word, frequency in
             word_counts(encoder, passages).items() if len(word) > 1]
    kept_pairs = {pair for word in word_counts(encoder, keep) for pair in zip(word, word[1:])}
    pair_count: Dict[Pair, int] = defaultdict(int)
    holders: Dict[Pair, Set[int]] = defaultdict(set)
    for index, (symbols, frequency) in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_count[pair] += frequency
            holders[pair].add(index)
    heap = [(-frequency, pair) for pair, frequency in pair_count.items()]
    heapq.heapify(heap)
    result = ContinuedMerges(merges=[])
    passed_over: Set[Pair] = set()
    taken = set(existing)
    bar = tqdm(total=count, desc="learn merges", unit="merge", disable=not show_progress)
    while heap and len(result.merges) < count:
        negative, pair = heapq.heappop(heap)
        if -negative != pair_count.get(pair, 0) or pair in passed_over:
            continue  # a stale entry: the pair's count has changed since
        if -negative < min_frequency:
            break
        token = join(*pair)
        if pair in kept_pairs or token in taken or (refuse is not None and refuse(token)):
            passed_over.add(pair)
            if pair in kept_pairs:
                result.kept_text.append(token)
            elif token not in taken:
                result.refused.append(token)
            continue
        result.merges.append(pair)
        taken.add(token)
        bar.update()
        # What the merge changes, summed over the words that hold the pair
        # (pairs a word keeps cancel out): only those are pushed again.
        delta: Dict[Pair, int] = defaultdict(int)
        for index in holders.pop(pair):
            symbols, frequency = words[index]
            new = merged(symbols, pair, token)
            if len(new) == len(symbols):
                continue  # held the pair once; an earlier merge took it
            for old_pair in zip(symbols, symbols[1:]):
                delta[old_pair] -= frequency
            for new_pair in zip(new, new[1:]):
                delta[new_pair] += frequency
                if token in new_pair:  # the other pairs already list this word
                    holders[new_pair].add(index)
            words[index] = (new, frequency)
        pair_count.pop(pair, None)
        delta.pop(pair, None)
        for changed_pair, change in delta.items():
            if change:
                frequency = pair_count.get(changed_pair, 0) + change
                if frequency > 0:
                    pair_count[changed_pair] = frequency
                    heapq.heappush(heap, (-frequency, changed_pair))
                else:
                    pair_count.pop(changed_pair, None)
    bar.close()
    return result
