"""String similarity in [0, 1] (1 = identical): the text metrics behind the SRL reward.

Pure functions of two strings; what of an action becomes those strings is
:mod:`swe_srl.rewards.compare`'s business.

The ratio is difflib's 2M/T (M matched characters, T total) with ``autojunk=False``.
difflib's default autojunk treats every character that fills more than 1% of a 200+ char
string as junk (spaces, ``e``, newlines), so long edits lose almost every match: a 348-char
edit scored 0.078 instead of 0.830 on real agent actions. Modes:
  * ``difflib``: the stdlib, the reference values;
  * ``cydifflib``: the same algorithm compiled, identical values, ~8x faster (falls back to
    ``difflib`` with a warning when not installed);
  * ``lcs``: rapidfuzz Indel normalised similarity, 2*LCS/T: much faster, a different
    metric (LCS >= difflib's greedy matching blocks, so values are equal or higher).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

from rapidfuzz.distance import Indel

from ..errors import ConfigError

try:  # compiled difflib; a core dependency, but the exact stdlib path must keep working
    import cydifflib as _cydifflib
except ImportError:  # pragma: no cover - depends on the environment
    _cydifflib = None

TextMode = Literal["difflib", "cydifflib", "lcs"]
TEXT_MODES: tuple[str, ...] = ("difflib", "cydifflib", "lcs")

_cydifflib_warned = False


def check_text_mode(mode: str) -> None:
    if mode not in TEXT_MODES:
        raise ConfigError(f"text similarity mode must be one of {list(TEXT_MODES)}, got {mode!r}")


def _sequence_matcher(mode: str) -> Callable[..., Any]:
    """The SequenceMatcher class for a difflib-family mode."""
    global _cydifflib_warned
    if mode == "cydifflib":
        if _cydifflib is not None:
            return _cydifflib.SequenceMatcher
        if not _cydifflib_warned:
            warnings.warn("cydifflib is not installed; similarity mode 'cydifflib' falls back to "
                          "the stdlib difflib (same values, ~8x slower): pip install cydifflib",
                          RuntimeWarning, stacklevel=3)
            _cydifflib_warned = True
    return difflib.SequenceMatcher


def similarities(candidates: Sequence[str], reference: str, mode: TextMode = "cydifflib") -> list[float]:
    """``similarity(c, reference, mode)`` for each candidate, sharing the work on
    ``reference`` (difflib indexes its second sequence once for all candidates)."""
    check_text_mode(mode)
    if mode == "lcs":
        return [Indel.normalized_similarity(c, reference) for c in candidates]
    matcher = _sequence_matcher(mode)(None, "", reference, autojunk=False)
    scores = []
    for candidate in candidates:
        if candidate == reference:
            scores.append(1.0)  # exact: identical strings give 2n/2n (and "" vs "" is 1.0)
            continue
        matcher.set_seq1(candidate)
        scores.append(matcher.ratio())
    return scores


def similarity(a: str, b: str, mode: TextMode = "cydifflib") -> float:
    """Similarity of ``a`` to ``b`` in [0, 1] (1 = identical). For the difflib modes this is
    ``difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()``, which is not always
    symmetric: pass the candidate first and the reference second."""
    return similarities([a], b, mode)[0]
