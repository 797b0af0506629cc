"""A learned context filter on the mention linker's links: is this catalog title, found in this message, said as
a film? (Or is it a character, an actor, a franchise, a director, an ordinary phrase: "Batman and the Joker",
"a Hitchcock fan", "the Star Wars films", "on prom night".)

    filt = load_filter()                          # retrieval/mention_filter.json, shipped with the package
    linker = MentionLinker(catalog, filter=filt)  # linker_for(catalog) loads it by default
    filt.score(feats)                             # probability that the link is a film said as one

A logistic regression over the context features below (`FEATURES`, computed by `link_features`), trained on the
even-numbered ReDial dialogues only (bench/train_mention_filter.py; the command is in the JSON): positives are the
mention protocol's typed titles (evaluation/mentions.py) linked right, negatives the links in messages without
mentions (and wrong links of typed messages). Weights, feature scaling and the threshold are plain JSON, never a
pickle; the threshold was picked on a dev half the model had not seen (see the JSON's "selection").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from dlsearch.retrieval.mentions import MentionLinker, _Token

FILTER_JSON = Path(__file__).resolve().parent / "mention_filter.json"

_CLAUSE_STOP = ".,!?;:()\n"
# Word lists shared with the linker (retrieval/mentions.py imports them from here: one direction, no cycle).
_QUOTES = "\"'\u201c\u201d\u2018\u2019*_"
_STOP = frozenset("a an the of and or in on at to for with by from is it its i my me you your we our he she they".split())
_FILM_WORDS = frozenset("movie movies film films flick flicks".split())
_FILM_VERBS = frozenset("seen see saw watch watched watching love loved like liked enjoy enjoyed recommend recommended "
                        "suggest try tried called titled favorite favourite check rewatch rewatched".split())
_SERIES = frozenset("series franchise trilogy saga sequel sequels prequel prequels remake reboot films movies "
                    "character characters universe comics comic cartoon show books book novel novels".split())
_DETERMINERS = frozenset("a an the this that some any another".split())
_PREPOSITIONS = frozenset("for on at during in of with from about by to into after before like".split())
_PERSON_AFTER = frozenset("is was has had does did and plays played stars starred".split())

FEATURES = (
    "year", "fuzzy", "quoted", "all_capitalised", "all_lower", "sentence_start", "message_title_case",
    "words", "log_chars", "min_zipf", "phrase_zipf", "risk_word", "risk_phrase", "risk_short",
    "film_verb_before", "film_noun_near", "series_after", "determiner_before", "preposition_before",
    "capital_after", "capital_before", "clause_end_after", "log_popularity", "log_longer_titles",
    "name_like", "name_like_x_series_after", "name_like_x_film_verb", "log_message_words", "possessive",
    "person_verb_after",
)


def _zipf(linker: "MentionLinker", word: str) -> float:
    z = linker._zipf.get(word)
    if z is None:
        from wordfreq import zipf_frequency

        z = linker._zipf[word] = zipf_frequency(word, "en")
    return z


def link_features(linker: "MentionLinker", text: str, toks: Sequence["_Token"], i: int, j: int,
                  words: tuple[str, ...], fuzzy: int, row: int, title_case: bool) -> dict[str, float]:
    """Context features of the link of toks[i:j] (catalog key `words`, catalog row `row`) in `text`."""

    key = linker.keys[words]
    span = toks[i:j]
    start, end = span[0].start, span[-1].end
    before = text[:start].rstrip()
    after = text[end:]
    # the clause: tokens before/after up to punctuation
    left: list[str] = []
    for k in range(i - 1, max(-1, i - 6), -1):
        if any(c in _CLAUSE_STOP for c in text[toks[k].end : toks[k + 1].start]):
            break
        left.append(toks[k].norm)
    right: list[str] = []
    for k in range(j, min(len(toks), j + 4)):
        if any(c in _CLAUSE_STOP for c in text[toks[k - 1].end : toks[k].start]):
            break
        right.append(toks[k].norm)
    content = [t for t in span if t.norm not in _STOP] or list(span)
    cap = all(t.raw[:1].isupper() for t in content)
    lower = not any(ch.isupper() for t in span for ch in t.raw)
    phrase = " ".join(words)
    pz = linker._phrase_zipf.get(phrase)
    if pz is None:
        from wordfreq import zipf_frequency

        pz = linker._phrase_zipf[phrase] = zipf_frequency(phrase, "en")
    nxt = toks[j] if j < len(toks) else None
    prev = toks[i - 1] if i > 0 else None
    name_like = float(len(content) == 1 and cap)
    series_after = float(any(w in _SERIES for w in right[:2]))
    film_verb = float(any(w in _FILM_VERBS for w in left[:4]))
    return {
        "year": float(key.year),
        "fuzzy": float(bool(fuzzy)),
        "quoted": float(start > 0 and end < len(text) and text[start - 1] in _QUOTES and text[end] in _QUOTES),
        "all_capitalised": float(cap),
        "all_lower": float(lower),
        "sentence_start": float(not before or before[-1] in ".!?\n"),
        "message_title_case": float(title_case),
        "words": float(len(words) - key.year),
        "log_chars": math.log1p(key.chars),
        "min_zipf": min(_zipf(linker, t.norm) for t in content),
        "phrase_zipf": pz,
        "risk_word": float(key.risk == "word"),
        "risk_phrase": float(key.risk == "phrase"),
        "risk_short": float(key.risk == "short"),
        "film_verb_before": film_verb,
        "film_noun_near": float(any(w in _FILM_WORDS for w in left[:3] + right[:2])),
        "series_after": series_after,
        "determiner_before": float(bool(left) and left[0] in _DETERMINERS),
        "preposition_before": float(bool(left) and left[0] in _PREPOSITIONS),
        "capital_after": float(nxt is not None and nxt.raw[:1].isupper() and nxt.norm not in _STOP
                               and nxt.start - end <= 1),
        "capital_before": float(prev is not None and prev.raw[:1].isupper() and prev.norm not in _STOP
                                and start - prev.end <= 1 and bool(text[: prev.start].rstrip())
                                and text[: prev.start].rstrip()[-1] not in ".!?\n"),
        "clause_end_after": float(not after.strip() or after.lstrip()[0] in _CLAUSE_STOP),
        "log_popularity": math.log1p(linker._popularity[row]),
        "log_longer_titles": math.log1p(linker._longer.get(words[: len(words) - key.year], 0)),
        "name_like": name_like,
        "name_like_x_series_after": name_like * series_after,
        "name_like_x_film_verb": name_like * film_verb,
        "log_message_words": math.log1p(len(toks)),
        "possessive": float(after[:2] in ("'s", "\u2019s")),
        "person_verb_after": float(bool(right) and right[0] in _PERSON_AFTER and not key.year),
    }


@dataclass(frozen=True)
class MentionFilter:
    """Logistic regression on standardized `FEATURES`: p = sigmoid(b + sum w_f (x_f - mean_f) / scale_f); a link
    is kept when p >= threshold."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float
    threshold: float
    meta: dict[str, Any]

    def score(self, feats: dict[str, float]) -> float:
        z = self.intercept + sum(w * (feats[f] - m) / s for f, m, s, w in
                                 zip(self.features, self.mean, self.scale, self.weights))
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def keep(self, feats: dict[str, float]) -> bool:
        return self.score(feats) >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "intercept": self.intercept, "threshold": self.threshold, **self.meta}


def load_filter(path: str | Path = FILTER_JSON) -> MentionFilter:
    """The filter written by bench/train_mention_filter.py.

    Raises:
        ValueError: naming the file and the field, when a field is missing, of the wrong length, or names a feature
            this code does not compute (a filter trained by another version).
    """
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the mention filter: {e}") from e
    for k in ("features", "mean", "scale", "weights", "intercept", "threshold"):
        if k not in rec:
            raise ValueError(f"{path}: field {k!r} missing (retrain: python bench/train_mention_filter.py)")
    unknown = [f for f in rec["features"] if f not in FEATURES]
    if unknown:
        raise ValueError(f"{path}: field 'features' names features this code does not compute: {unknown}")
    n = len(rec["features"])
    for k in ("mean", "scale", "weights"):
        if not isinstance(rec[k], list) or len(rec[k]) != n:
            raise ValueError(f"{path}: field {k!r} must be a list of {n} numbers, one per feature")
    if any(not s > 0 for s in rec["scale"]):
        raise ValueError(f"{path}: field 'scale' must be positive")
    meta = {k: v for k, v in rec.items() if k not in ("features", "mean", "scale", "weights", "intercept", "threshold")}
    return MentionFilter(tuple(rec["features"]), tuple(map(float, rec["mean"])), tuple(map(float, rec["scale"])),
                         tuple(map(float, rec["weights"])), float(rec["intercept"]), float(rec["threshold"]), meta)
