"""Okapi BM25 (k1 = 1.2, b = 0.75, Lucene's non-negative idf): the lexical baseline the
evaluation harness ranks trials with (docs/matching.md, "Evaluation")."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping

K1, B = 1.2, 0.75
_WORD = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lower-case runs of letters and digits."""
    return _WORD.findall(text.lower())


class BM25:
    """An index of documents (id -> text) scored against free-text queries."""

    def __init__(self, documents: Mapping[str, str]) -> None:
        self._terms = {doc: Counter(tokens(text)) for doc, text in documents.items()}
        self._length = {doc: sum(counts.values()) for doc, counts in self._terms.items()}
        self._average = (sum(self._length.values()) / len(self._length)) if self._length else 0.0
        frequency = Counter(term for counts in self._terms.values() for term in counts)
        n = len(self._terms)
        self._idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in frequency.items()}

    def score(self, query: str, doc: str) -> float:
        counts, length = self._terms[doc], self._length[doc]
        norm = K1 * (1 - B + B * length / self._average) if self._average else K1
        return sum(self._idf[t] * counts[t] * (K1 + 1) / (counts[t] + norm)
                   for t in tokens(query) if t in counts)

    def rank(self, query: str) -> list[tuple[str, float]]:
        """Every document, best first (ties by id)."""
        scored = [(doc, self.score(query, doc)) for doc in self._terms]
        return sorted(scored, key=lambda pair: (-pair[1], pair[0]))
