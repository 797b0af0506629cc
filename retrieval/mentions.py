"""Mention linking: catalog titles written as plain text in a conversation, linked to catalog items.

    linker = linker_for(catalog)                      # built once per catalog (~2 s for 10k titles), then cached
    linker.find("I loved The Matrix and inceptoin")    # [Mention('85036', ...), Mention('<Inception id>', ...)]
    conv = link_conversation(conv, linker)            # exclude += linked items; meta["linked_mentions"] records them

How a title is found (bench/bench_mentions.py measures it on ReDial, figures in docs/retrieval.md):
  * keys: every title's words (data/titles.py `title_words`) with and without its year, hyphenated words also
    joined ("spiderman"), "&" also as "and", alternative titles in parentheses ("Léon (The Professional)") and
    `meta["aliases"]`; matched on word boundaries, longest match first;
  * one typo'd word (edit distance 1, also a swap of two letters, never the first letter) in a title of at least 6
    letters (8 for common-word titles), when the word as typed is not itself an English word (Zipf >= 2.5:
    "goodie" is not "Goldie", "caper" not "Casper") and both words have 4+ letters; with the year right after the
    title also a real word, a word of 2-3 letters and a title of 3+ letters ("Gat Out (2017)", "Efl (2003)");
  * titles that are ordinary words ("It", "Up", "Her", "Frozen", "The Game") are the trap: chat is full of them.
    A title whose words are all common English (wordfreq) or that is 3 letters or shorter is linked only with a
    cue: its year right after it, quotes around it, or capitalised words that do not start a sentence (in a message
    that does not capitalise most of its words anyway);
  * a title in lower case right after "a"/"an" is a noun of the sentence ("it really is a hoot", "an orphan");
  * one title, several works (Halloween 1978 / 2007 / 2018): a year after the title decides, else the work the
    conversation already mentions as `@id` (`find(prefer=...)`, `find_in`), else "original"/"remake" before it,
    else the work whose concepts share most words with the message, else the most mentioned/rated one.
  * then a learned context filter (retrieval/mention_filter.py, `linker_for` loads it) drops links whose context
    says "not a film" (a logistic regression on casing, cue words, word frequency, ...; trained on ReDial dev).
`@<id>` mentions are left to data.formats (`Conversation.mentioned`); their digits are never read as titles.
"""

from __future__ import annotations

import math
import re
import weakref
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import Conversation
from dlsearch.data.titles import split_title_year, title_words, titles_of
from dlsearch.retrieval.bm25 import CHAT_STOPWORDS
from dlsearch.retrieval.mention_filter import _FILM_WORDS, _QUOTES, _STOP, MentionFilter, link_features, load_filter

# A title is "common" (linked only with a cue) when the words it is made of are likely to be typed for another
# reason. Its likelihood is the sum over its content words of log10 frequency (wordfreq's Zipf scale minus 9, so
# "the" ~ -1.3, once per million words = -6), movie-chat words (data/../bm25 CHAT_STOPWORDS, catalog concepts used by
# many items: "scary", "funny", "horror") counted as Zipf 6. At or above COMMON_LOGP: common. -5.5 makes a
# one-word title common from Zipf 3.5 ("inception" 3.65, "frozen" 4.3: common; "deadpool" 3.2, "nemo" 3.2: not)
# and a two-word one from a sum of 12.5 ("good time": common; "police academy" 9.9, "rush hour" 9.5: not).
# Tuned on the even-numbered ReDial dialogues, measured on the odd ones (bench/bench_mentions.py).
COMMON_LOGP = -7.5
WORD_ZIPF = 3.5  # one-word titles: common from this Zipf frequency on
EVERYDAY_LOGP = -4.0  # titles this likely ("Them" 6.6, "Family", "Weekend" 5.2, "The Other") are treated as short
DOMAIN_ZIPF = 6.0
DOMAIN_MIN_ITEMS = 50  # a concept word used by at least this many items is a movie-chat word
# A typed word at or above this frequency is a real word, not a typo of a title word ("these" is not "there").
REAL_WORD_ZIPF = 2.5
MIN_FUZZY_CHARS = 6  # titles shorter than this are matched exactly only: one edit turns "Heat" into "Head"
MIN_FUZZY_CHARS_RISKY = 8  # common-word titles (which need a cue anyway) from this length
MIN_FUZZY_CHARS_YEAR = 3  # ... unless the year follows: "Cxick (2010)"
MIN_FUZZY_WORD = 4   # the typo'd word and the title word have at least this many letters ...
MIN_FUZZY_WORD_YEAR = 2  # ... unless the year follows: "Gat Out (2017)", "Ik (2017)"
SHORT_CHARS = 3      # titles of at most this many letters ("It", "Up", "Her") always need a cue
TITLE_CASE_SHARE = 0.6  # a message capitalising more than this share of its words gives no capitalisation cue

_TOKEN_RE = re.compile(r"[\w'\u2019]+")
_SENTENCE_END = ".!?\n"
# After a common title, words that make it a pronoun or a name ("It is ...", "Saw it twice") rather than a title.
_NOT_TITLE_AFTER = frozenset("is was has had will would can could does did seems looks sounds makes made gets got really "
                             "just also probably comes came goes went".split())
# After any title, words that make it a modifier: "a Hitchcock fan", "south park humor", "a heist movie".
_MODIFIED_BY = frozenset("fan fans humor humour vibe vibes style walker case type kind".split())
_INDEFINITE = frozenset("a an any some another other more new".split())
# What people ask films for: "a horror movie for Halloween", "date night", "with the kids": movie-chat words.
_OCCASIONS = frozenset("night nights date weekend weekends kids kid family friends friend christmas halloween valentine "
                       "valentines holiday holidays summer winter girls boys party rainy sunday saturday friday "
                       "thanksgiving easter".split())
# Before a one-word common title these make it an occasion or a place, not a film: "for Halloween", "on Friday".
_PREPOSITIONS = frozenset("for on at during this next last in of with from about by to".split())
# Words that pick among remakes: the oldest or the newest work of one title.
_OLDER = frozenset("original originals old older oldest classic classics".split())
_NEWER = frozenset("new newer newest remake remakes remade latest recent reboot".split())
# "did you watch click ?": a common title in lower case right after one of these words and ending its clause.
_TOLD_BY = frozenset("seen watch watched watching saw loved liked enjoyed recommend recommended suggest try called "
                     "titled like is".split())
_CLAUSE_END = ".,!?;:)"
_CLAUSE_WORDS = frozenset("and or but too also yet lately recently before yesterday again either though is was have has "
                          "which that it with".split())
# "love story is a pretty good 70s romance": a common title opening a sentence, then is/was and a verdict.
_VERDICT = frozenset("good great funny scary awesome amazing hilarious classic movie film creepy better best favorite "
                     "favourite cute sad fun excellent underrated overrated".split())
# Words before a one-word common title that say "a film": "have you seen Frozen", "I loved Heat", "try Up".
_FILM_CONTEXT = frozenset("seen see saw watch watched watching love loved like liked enjoy enjoyed recommend suggest "
                          "try called movie film favorite favourite check out about".split())


@dataclass(frozen=True)
class Mention:
    """One linked title: the item, where it was written (message index, character span) and how it was matched."""

    item_id: str
    text: str
    start: int
    end: int
    message: int = 0
    how: str = "exact"  # exact | year (the year was written too) | fuzzy (one typo'd word)


_RISKS = ("", "phrase", "word", "short")


@dataclass
class _Key:
    rows: list[int]        # catalog rows titled so (several works share "halloween")
    year: bool             # the key ends with the year
    risk: str              # "" | "phrase" (common words) | "word" (one common word) | "short": which cue it needs
    chars: int             # letters in the key (without the year)
    alias_rows: list[int] = field(default_factory=list)  # rows whose title is this key plus a leading article


@dataclass
class _Token:
    norm: str
    start: int
    end: int
    raw: str


def _zipf(word: str) -> float:
    from wordfreq import zipf_frequency

    return zipf_frequency(word, "en")


def _variants(title: str) -> list[str]:
    """Written forms of one title without its year: as is, '&' as 'and', hyphenated words joined, alternatives in
    parentheses ('Cité des enfants perdus, La (City of Lost Children, The)')."""
    base, _ = split_title_year(title)
    out = [base]
    m = re.match(r"^(.*?)\s*\(([^()]*)\)$", base)
    if m:
        out += [m.group(1), re.sub(r"^a\.k\.a\.\s*", "", m.group(2), flags=re.I)]
    more = []
    for v in out:
        if "&" in v:
            more.append(v.replace("&", " and "))
        if re.search(r"\w-\w", v):
            more.append(re.sub(r"(\w)-(\w)", r"\1\2", v))
    return [v for v in dict.fromkeys(out + more) if v.strip()]


def tokenize(text: str) -> list[_Token]:
    """Word tokens with character offsets; '@123' mentions are skipped (their digits are ids, not titles)."""
    out = []
    for m in _TOKEN_RE.finditer(text):
        if m.start() > 0 and text[m.start() - 1] in "@:;":  # '@123' is an id, ':D' a smiley
            continue
        norm = title_words(m.group())
        if norm:
            for part in norm.split():  # 'co_op' -> two words, like title_words does for titles
                out.append(_Token(part, m.start(), m.end(), m.group()))
    return out


class MentionLinker:
    """Finds catalog titles in free text (see module docstring). Build with `linker_for(catalog)`."""

    def __init__(self, catalog: Catalog, *, common_logp: float = COMMON_LOGP, word_zipf: float = WORD_ZIPF,
                 filter: MentionFilter | None = None):
        """`filter`: a learned context filter (retrieval/mention_filter.py) that drops links the rules accepted but
        whose context says "not a film" (a character, a franchise, a director); None: the rules alone."""
        self.catalog, self.titles = catalog, titles_of(catalog)
        self.filter = filter
        self.keys: dict[tuple[str, ...], _Key] = {}
        self.trie: dict = {}
        zipf: dict[str, float] = {}

        domain = set(CHAT_STOPWORDS) | _OCCASIONS
        counts: dict[str, int] = {}
        for it in catalog:
            for w in {w for c in it.concepts for w in title_words(c).split()}:
                counts[w] = counts.get(w, 0) + 1
        domain |= {w for w, c in counts.items() if c >= DOMAIN_MIN_ITEMS}
        self.domain = frozenset(domain)

        def logp(word: str) -> float:
            if word not in zipf:
                zipf[word] = _zipf(word)
            return (max(zipf[word], DOMAIN_ZIPF) if word in domain else zipf[word]) - 9.0

        for row, it in enumerate(catalog):
            _, year = split_title_year(it.title)
            names = _variants(it.title) + [str(a) for a in (it.meta or {}).get("aliases", []) if isinstance(a, str)]
            for name in names:
                words = tuple(title_words(name).split())
                if not words:
                    continue
                chars = sum(len(w) for w in words)
                content = [w for w in words if w not in _STOP] or list(words)
                lp = sum(logp(w) for w in words)  # every word counts: "back to the future" is unlikely chat
                if all(w.isdigit() for w in words) or chars <= SHORT_CHARS or lp >= EVERYDAY_LOGP:
                    risk = "short"  # "It", "Up", "2", "Them", "The Other": quotes, a year, or a capital + film word
                elif len(content) == 1 and logp(content[0]) >= word_zipf - 9.0:
                    risk = "word"
                elif len(content) > 1 and lp >= common_logp:
                    risk = "phrase"
                elif len(words) == 2 and any(w in CHAT_STOPWORDS for w in words):  # "Scary Movie", "Love Story"
                    risk = "phrase"
                else:
                    risk = ""
                self._add(words, row, year=False, risk=risk, chars=chars)
                if year is not None:
                    self._add(words + (str(year),), row, year=True, risk="", chars=chars)
                if words[0] in ("the", "a", "an") and len(words) > 2 and not risk:  # "Silence of the Lambs"
                    self._add(words[1:], row, year=False, risk=risk, chars=chars, alias=True)
        # one-edit corrections of title words (symmetric deletes: a typo'd word and the title word share a deletion)
        self.deletes: dict[str, set[str]] = {}
        for words in self.keys:
            for w in words:
                if len(w) >= MIN_FUZZY_WORD_YEAR and not w.isdigit():
                    for d in {w} | {w[:i] + w[i + 1:] for i in range(len(w))}:
                        self.deletes.setdefault(d, set()).add(w)
        self._zipf = zipf
        self._phrase_zipf: dict[str, float] = {}
        self._longer: dict[tuple[str, ...], int] = {}  # keys extending a key: "star wars" heads 9

        def count(node: dict, path: tuple[str, ...]) -> int:
            n = sum(count(child, path + (w,)) for w, child in node.items() if w is not None and not w.isdigit())
            if path:
                self._longer[path] = n
            return n + (None in node)

        count(self.trie, ())
        self._corr: dict[str, set[str]] = {}
        self._popularity = [self._pop(it) for it in catalog]

    def _article_rows(self, words: tuple[str, ...]) -> list[int]:
        """Rows titled `words` with or without a leading article ("the ring" -> "Ring (1998)" and back)."""
        other = words[1:] if words[0] in ("the", "a", "an") and len(words) > 1 else ("the",) + words
        return [r for k in (words, other) if k in self.keys for r in self.keys[k].rows + self.keys[k].alias_rows]

    def _key_pop(self, words: tuple[str, ...]) -> float:
        key = self.keys[words]
        return max(self._popularity[r] for r in key.rows or key.alias_rows)

    @staticmethod
    def _pop(it) -> float:
        meta = it.meta or {}
        return float(meta.get("nbMentions") or meta.get("n_ratings") or 0)

    def _add(self, words: tuple[str, ...], row: int, *, year: bool, risk: str, chars: int, alias: bool = False) -> None:
        key = self.keys.get(words)
        if key is None:
            key = self.keys[words] = _Key([], year, risk, chars)
            node = self.trie
            for w in words:
                node = node.setdefault(w, {})
            node[None] = words
        elif key.rows or key.alias_rows:
            key.risk = min(key.risk, risk, key=_RISKS.index)  # the least demanding of the titles written so
        if alias:  # a title without its article names an item only when no title is written exactly so
            if row not in key.alias_rows:
                key.alias_rows.append(row)
        elif row not in key.rows:
            key.rows.append(row)

    def _corrections(self, word: str) -> set[str]:
        """Title words one edit (or one swap) away from `word` (with the same first letter)."""
        if word in self._corr:
            return self._corr[word]
        self._corr[word] = out = self._corrections_uncached(word)
        return out

    def _corrections_uncached(self, word: str) -> set[str]:
        from rapidfuzz.distance import OSA

        if len(word) < MIN_FUZZY_WORD_YEAR or word.isdigit():
            return set()
        if word not in self._zipf:
            self._zipf[word] = _zipf(word)
        cands: set[str] = set()
        for d in {word} | {word[:i] + word[i + 1:] for i in range(len(word))}:
            cands |= self.deletes.get(d, set())
        # typos keep the first letter: "oldie" is not "Goldie"
        return {c for c in cands if c != word and c[0] == word[0] and OSA.distance(word, c, score_cutoff=1) <= 1}

    def _candidates(self, toks: list[_Token]) -> list[tuple[int, int, tuple[str, ...], int]]:
        """(start token, end token, key, fuzzy) of every key found at a word boundary; fuzzy 0: exact, 1: one word
        typo'd, 2: one word replaced by a real word one edit away, or a word of 2-3 letters typo'd (both read only
        when the title's year follows)."""
        out = []
        corr: dict[int, set[str]] = {}
        for i in range(len(toks)):
            stack = [(self.trie, i, 0)]
            while stack:
                node, j, fuzzy = stack.pop()
                if None in node and j > i:
                    out.append((i, j, node[None], fuzzy))
                if j >= len(toks):
                    continue
                w = toks[j].norm
                if w in node:
                    stack.append((node[w], j + 1, fuzzy))
                if not fuzzy:  # also when w is a title word: "avenger" typed for "avengers"
                    if j not in corr:
                        corr[j] = self._corrections(w)
                    # a real word ("girl" for "girls") or a short one ("gat" for "get") is read as a typo only when
                    # the title's year follows
                    real = self._zipf.get(w, 0.0) >= REAL_WORD_ZIPF
                    for c in corr[j]:
                        if c in node:
                            short = min(len(w), len(c)) < MIN_FUZZY_WORD
                            stack.append((node[c], j + 1, 2 if real or short else 1))
        return out

    def _cue(self, text: str, toks: list[_Token], i: int, j: int, risk: str, title_case: bool) -> bool:
        """Whether toks[i:j], a common title, is written as a title: in quotes; or capitalised, not merely as a
        sentence's first word, in a message that does not capitalise most words; one word also not inside a longer
        name ("Jack Nicholson", "Steve Martin") and after a film word ("seen", "loved", "movie")."""
        start, end = toks[i].start, toks[j - 1].end
        if start > 0 and end < len(text) and text[start - 1] in _QUOTES and text[end] in _QUOTES:
            return True
        if risk != "short" and self._told(text, toks, i, j):
            return True
        if title_case or any(t.raw.isdigit() for t in toks[i:j]) and risk == "short":
            return False
        words = [t for t in toks[i:j] if t.norm not in _STOP or t is toks[i]]
        if not all(t.raw[:1].isupper() for t in words):
            return False
        before = text[:start].rstrip()
        if not before or before[-1] in _SENTENCE_END:  # a sentence's first word is capitalised anyway
            if risk != "phrase" or not any(t.raw[:1].isupper() for t in toks[i + 1 : j] if t.norm not in _STOP):
                return False
        if risk == "phrase":
            return True
        if j < len(toks) and toks[j].norm in _NOT_TITLE_AFTER:
            return False
        if i > 0 and toks[i - 1].norm in _PREPOSITIONS:
            return False
        return any(t.norm in _FILM_CONTEXT for t in toks[max(0, i - 4) : i])

    def _told(self, text: str, toks: list[_Token], i: int, j: int) -> bool:
        """A common title in any case, said as a film: right after "seen", "watch", "loved", ... and ending its
        clause ("did you watch click ?", "I would like to watch easy a"); never when all its words are genre or
        chat words ("I like action and comedy")."""
        if all(t.norm in self.domain or t.norm in _STOP for t in toks[i:j]):
            return False
        before = text[: toks[i].start].rstrip()
        if (not before or before[-1] in _SENTENCE_END) and j < len(toks) and toks[j].norm in ("is", "was"):
            return any(t.norm in _VERDICT for t in toks[j + 1 : j + 5])
        asked = i >= 2 and toks[i - 1].norm == "about" and toks[i - 2].norm in ("what", "how")  # "what about the mask"
        if not asked and not any(self._said_after(text, toks, k, i) for k in range(max(0, i - 2), i)):
            return False
        rest = text[toks[j - 1].end :].lstrip()
        return not rest or rest[0] in _CLAUSE_END or (j < len(toks) and toks[j].norm in _CLAUSE_WORDS)

    @staticmethod
    def _said_after(text: str, toks: list[_Token], k: int, i: int) -> bool:
        """Whether toks[k] is a word like "seen" or "loved" that tells of the title starting at toks[i], in the same
        clause ("what do you like?  was epic!" is not)."""
        gap = text[toks[k].end : toks[i].start]
        return toks[k].norm in _TOLD_BY and not any(c in _CLAUSE_END + _SENTENCE_END for c in gap)

    @staticmethod
    def _in_context(text: str, toks: list[_Token], i: int, j: int) -> bool:
        """False when toks[i:j] is part of a longer name ("Goldie Hawn", "Alfred Hitchcock": one word next to
        another capitalised one), a modifier ("a Hitchcock fan", "a heist movie") or a noun after "a" ("a hoot")."""
        nxt = toks[j] if j < len(toks) else None
        if nxt is not None and nxt.norm in _MODIFIED_BY:
            return False
        if nxt is not None and nxt.norm in _FILM_WORDS and any(t.norm in _INDEFINITE for t in toks[max(0, i - 2) : i]):
            return False
        if j - i == 1:
            if nxt is not None and nxt.raw[:1].isupper() and nxt.start - toks[i].end <= 1 and nxt.norm not in _STOP:
                return False
            prev = toks[i - 1] if i > 0 else None
            if prev is not None and prev.raw[:1].isupper() and toks[i].start - prev.end <= 1 and prev.norm not in _STOP:
                before = text[: prev.start].rstrip()
                if before and before[-1] not in _SENTENCE_END:
                    return False
        # "it really is a hoot", "an orphan": a title typed in lower case right after "a"/"an" (and not starting
        # with an article itself) is a noun of the sentence; typed titles follow "seen", "like", "and", not "a"
        if (i > 0 and toks[i - 1].norm in ("a", "an") and toks[i].norm not in ("a", "an", "the")
                and not any(t.raw[:1].isupper() for t in toks[i:j])
                and not any(c in _CLAUSE_END + _SENTENCE_END for c in text[toks[i - 1].end : toks[i].start])):
            return False
        return True

    def _pick(self, rows: list[int], context: set[str], near: set[str] = frozenset(),
              prefer: frozenset[int] = frozenset()) -> int:
        """One work among same-titled items: one the conversation already mentions (`prefer`, groups), then
        "the original" / "the remake" just before it (oldest / newest), then concept words shared with the message,
        then popularity."""
        groups = {self.titles.group_of[r]: r for r in reversed(rows)}  # first row of each group
        if len(groups) == 1:
            return self.titles.members[next(iter(groups))][0]

        era = 1 if near & _NEWER else (-1 if near & _OLDER else 0)

        def score(r: int) -> tuple:
            year = split_title_year(self.catalog.items[r].title)[1] or 0
            concepts = {w for c in self.catalog.items[r].concepts for w in title_words(c).split()}
            return (self.titles.group_of[r] in prefer, era * year if era and year else 0, len(concepts & context),
                    self._popularity[r], -r)

        best = max(groups.values(), key=score)
        return self.titles.members[self.titles.group_of[best]][0]

    def find(self, text: str, *, message: int = 0, prefer: Iterable[str] = (),
             record: list | None = None) -> list[Mention]:
        """Titles linked in one message, left to right (one mention per span; overlapping matches: the longest).
        `prefer`: item ids the conversation already mentions; among works sharing a title ("Sherlock Holmes" 2009
        and 2010) the one mentioned wins. `record`: a list that receives (Mention, features, stage) for every link
        the rules accept (stage "rules", kept or not by the filter) and every exact common title they leave for
        want of a cue (stage "no_cue"): the filter's training data (bench/train_mention_filter.py)."""
        toks = tokenize(text)
        groups = frozenset(self.titles.group_of[self.catalog.index(i)] for i in prefer if i in self.catalog)
        if not toks:
            return []
        alpha = [t for t in toks if t.raw[:1].isalpha()]
        title_case = len(alpha) >= 4 and sum(t.raw[:1].isupper() for t in alpha) > TITLE_CASE_SHARE * len(alpha)
        cands = self._candidates(toks)
        # ties (one typo, two titles: "thid man" is "third man" or "thin man") go to the most mentioned title, then
        # the alphabetically first: the same answer in every process, whatever the string hash seed
        cands.sort(key=lambda c: (-(c[1] - c[0]), c[3], not self.keys[c[2]].year, c[0], -self._key_pop(c[2]), c[2]))
        taken = [False] * len(toks)
        context = {t.norm for t in toks}
        out: list[Mention] = []
        spans: list[tuple[int, int]] = []
        listed: list[tuple[int, int, tuple[str, ...], int]] = []  # common titles without a cue of their own

        def accept(i: int, j: int, words: tuple[str, ...], fuzzy: int, stage: str = "rules") -> None:
            key = self.keys[words]
            if stage == "rules":
                for t in range(i, j):
                    taken[t] = True  # a span the filter drops is still read: "Star Wars" films are not "Star"
            near = {t.norm for t in toks[max(0, i - 3) : i]}  # "the original jumanji", "the new beauty and the beast"
            rows = key.rows or key.alias_rows
            if groups:  # "jungle book" / "the ring" for the conversation's "The Jungle Book (2016)" / "Ring (1998)"
                rows = rows + [r for r in self._article_rows(words) if self.titles.group_of[r] in groups]
            row = self._pick(rows, context - set(words), near, groups)
            how = "fuzzy" if fuzzy else ("year" if key.year else "exact")
            mention = Mention(self.catalog.items[row].id, text[toks[i].start : toks[j - 1].end], toks[i].start,
                              toks[j - 1].end, message, how)
            if self.filter is not None or record is not None:
                feats = link_features(self, text, toks, i, j, words, fuzzy, row, title_case)
                if record is not None:
                    record.append((mention, feats, stage))
                if stage != "rules" or (self.filter is not None and not self.filter.keep(feats)):
                    return
            spans.append((i, j))
            out.append(mention)

        for i, j, words, fuzzy in cands:
            if any(taken[i:j]):
                continue
            key = self.keys[words]
            if fuzzy == 2 and not key.year:
                continue
            if fuzzy and not (key.year and key.chars >= MIN_FUZZY_CHARS_YEAR) and (
                    key.risk == "short" or key.chars < (MIN_FUZZY_CHARS_RISKY if key.risk else MIN_FUZZY_CHARS)):
                continue
            if not key.year and not self._in_context(text, toks, i, j):
                continue
            if key.risk and not self._cue(text, toks, i, j, key.risk, title_case):
                if key.risk != "short" and not fuzzy:
                    listed.append((i, j, words, fuzzy))
                elif record is not None and not fuzzy:
                    accept(i, j, words, fuzzy, "no_cue")
                continue
            accept(i, j, words, fuzzy)
        # a common title listed with linked ones is a title too: "Inception (2010), iron man and Doctor Strange"
        changed = True
        while changed and listed:
            changed = False
            for c in list(listed):
                i, j = c[0], c[1]
                if any(taken[i:j]):
                    listed.remove(c)
                elif any(self._listed(text, toks, a, b, i, j) for a, b in spans):
                    listed.remove(c)
                    accept(*c)
                    changed = True
        for c in listed if record is not None else ():
            if not any(taken[c[0] : c[1]]):
                accept(*c, "no_cue")
        return sorted(out, key=lambda m: m.start)

    @staticmethod
    def _listed(text: str, toks: list[_Token], a: int, b: int, i: int, j: int) -> bool:
        """Whether spans toks[a:b] and toks[i:j] are neighbours in a list: only ',', 'and', 'or' between them."""
        if b <= i:
            left, right = b, i
        elif j <= a:
            left, right = j, a
        else:
            return False
        between = toks[left:right]
        if len(between) > 1 or (between and between[0].norm not in ("and", "or", "nor")):
            return False
        gap = text[toks[left - 1].end : toks[right].start]
        return bool(between) or gap.strip() in (",", "&", "/")

    def find_in(self, conv: Conversation, roles: Sequence[str] = ("user", "assistant")) -> list[Mention]:
        """Mentions in every message of `roles`, in order; same-titled works resolved towards the conversation's
        `@id` mentions."""
        prefer = conv.mentioned()
        return [m for n, msg in enumerate(conv.messages) if msg.role in roles
                for m in self.find(msg.content, message=n, prefer=prefer)]


def link_conversation(conv: Conversation, linker: MentionLinker, *,
                      roles: Sequence[str] = ("user", "assistant")) -> Conversation:
    """A copy of `conv` whose `exclude` also holds the linked items (and `@id` mentions), and whose
    meta["linked_mentions"] records each link ({id, text, message, start, end, how}). Every strategy then gets
    the linked items as mentioned items; the router removes their duplicate groups from the answer."""
    found = linker.find_in(conv, roles)
    ids = [m.item_id for m in found]
    exclude = list(dict.fromkeys(conv.exclusions() + ids))
    meta = {**conv.meta, "linked_mentions": [vars(m) for m in found]}
    return replace(conv, exclude=exclude, meta=meta)


_CACHE: "weakref.WeakKeyDictionary[Catalog, MentionLinker]" = weakref.WeakKeyDictionary()


def linker_for(catalog: Catalog) -> MentionLinker:
    """The linker of a catalog with the shipped context filter (retrieval/mention_filter.json), built on first use
    and cached for the life of the Catalog object."""
    linker = _CACHE.get(catalog)
    if linker is None:
        linker = _CACHE[catalog] = MentionLinker(catalog, filter=load_filter())
    return linker
