"""How well plain-text titles are linked back to items, measured on conversations with `@id` mentions (ReDial).

    report = linking_report(linker, dialogues, seed=0)     # {"precision", "recall", "false_links_per_1000", ...}

Each message with `@id` mentions is rewritten as a person would type it: every `@id` becomes the item's title,
half of them without the year and in lower case, one in ten with a typo (one letter deleted, inserted, replaced or
swapped with its neighbour, never the first letter); the linker then reads the text. A link is right when it names
the mentioned item or a member of its duplicate group (data/titles.py: the same work). False links are counted on
every message with its mentions removed, the linker knowing the conversation's `@id`s (as `link_conversation` does:
among same-titled works it picks the one the conversation mentions). A link there is false unless
  * it names a film that the same conversation mentions as `@id` (people also type titles: "I just might give
    Deadpool a try" after "@Deadpool"; ReDial's `movieMentions` field holds exactly the dialogue's `@id`s, checked
    on all 1,342 dialogues, so it adds nothing), or
  * it is in `typed` (TYPED_TITLES, read by `load_typed_titles`): plain-text titles that a person checked by
    reading the message in its conversation ("Yes I seen hellboy!", "Did you watch finding nemo?"), which ReDial
    has no `@id` for. A link is labelled only when the message names that work as a film; never for a character
    ("Batman and the Joker"), an actor ("with the rock"), a franchise or series ("the terminator films", "the
    entire series for The Hobbit"), a TV show, an ordinary phrase, or another work of the same title. The file
    says which links were labelled and why; links the labels do not name are false.
Both kinds are counted apart; `false_links_strict` counts the typed-title links as false (the protocol without the
labels), and all links per 1,000 messages are reported too.
"""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any, Collection, Sequence

from dlsearch.data.catalog import Catalog, CatalogError, read_jsonl
from dlsearch.data.formats import Conversation, mention_ids, render_mentions
from dlsearch.data.titles import split_title_year, titles_of


TYPED_TITLES = Path(__file__).resolve().parent / "redial_typed_titles.jsonl"


def load_typed_titles(conversations: Sequence[Conversation], catalog: Catalog,
                      path: str | Path = TYPED_TITLES) -> set[tuple[str, int, str]]:
    """The checked plain-text titles of `path` as (conversation id, message index, item id), for the conversations
    given (labels of other conversations are skipped). Each line: {"conversationId", "message" (0-based index),
    "movieId", "text" (the words as typed, found in that message), "movie", "why"}.

    Raises:
        CatalogError: a field is missing or of the wrong type, the movie is not in the catalog, the message index is
            out of range, or the text is not in that message (a label that no longer fits the data).
    """
    by_id = {c.id: c for c in conversations}
    out: set[tuple[str, int, str]] = set()
    for line, rec in read_jsonl(path):
        for key, kind in (("conversationId", str), ("message", int), ("movieId", str), ("text", str), ("why", str)):
            if not isinstance(rec.get(key), kind):
                raise CatalogError(f"missing or not a {kind.__name__}", path=str(path), line=line, field=key)
        if rec["movieId"] not in catalog:
            raise CatalogError(f"movie {rec['movieId']!r} is not in the catalog", path=str(path), line=line,
                               field="movieId")
        conv = by_id.get(rec["conversationId"])
        if conv is None:
            continue
        if not 0 <= rec["message"] < len(conv.messages):
            raise CatalogError(f"conversation {conv.id} has {len(conv.messages)} messages", path=str(path), line=line,
                               field="message")
        if rec["text"] not in conv.messages[rec["message"]].content:
            raise CatalogError(f"{rec['text']!r} is not in message {rec['message']} of conversation {conv.id}",
                               path=str(path), line=line, field="text")
        out.add((conv.id, rec["message"], rec["movieId"]))
    return out


def typo(word: str, rng: random.Random) -> str:
    """One edit inside `word`, never at its first letter."""
    if len(word) < 2:
        return word
    i = rng.randrange(1, len(word))
    op = rng.choice(("delete", "insert", "replace", "swap") if i < len(word) - 1 else ("delete", "insert", "replace"))
    c = rng.choice(string.ascii_lowercase)
    if op == "delete":
        return word[:i] + word[i + 1 :]
    if op == "insert":
        return word[:i] + c + word[i:]
    if op == "replace":
        return word[:i] + (c if c != word[i].lower() else "x") + word[i + 1 :]
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def render_title(title: str, rng: random.Random, *, plain_share: float = 0.5, typo_share: float = 0.1,
                 cased_share: float = 0.0) -> str:
    """A title as typed: with probability plain_share without year and lower case (of those, cased_share keep the
    catalog's capitals: "Toy Story"; 0 in the protocol, used to train the mention filter); with typo_share one typo
    in the longest word of the title (never in the year)."""
    base, year = split_title_year(title)
    plain = rng.random() < plain_share
    if rng.random() < typo_share:
        words = base.split(" ")
        longest = max(range(len(words)), key=lambda n: (len(words[n]), -n))
        words[longest] = typo(words[longest], rng)
        base = " ".join(words)
    if plain:
        return base if cased_share and rng.random() < cased_share else base.lower()
    return f"{base} ({year})" if year is not None else base


def linking_report(linker: Any, conversations: Sequence[Conversation], *, seed: int = 0, plain_share: float = 0.5,
                   typo_share: float = 0.1, examples: int = 10, cased_share: float = 0.0,
                   typed: Collection[tuple[str, int, str]] = (), links: list | None = None) -> dict[str, Any]:
    """Precision and recall of the links in rendered messages, and false links per 1,000 messages with the
    mentions removed (see module docstring; `typed`: `load_typed_titles`). Counting is per message and per
    duplicate group. `links`: a list that receives one dict per link the linker's rules considered
    (`MentionLinker.find(record=)`), labelled as this protocol counts it: {"conversation", "message_index", "part"
    ("typed": a rendered message, "bare": mentions removed), "stage", "text", "item", "features", "label"
    (1: right / a film of the conversation / a checked typed title; 0: wrong or false)}: the training data of the
    mention filter (bench/train_mention_filter.py)."""
    catalog: Catalog = linker.catalog
    titles = titles_of(catalog)
    rng = random.Random(seed)
    tp = fp = fn = 0
    n_msgs = n_plain = false_links = 0
    wrong: list[dict[str, Any]] = []
    false: list[dict[str, Any]] = []
    dialogue_links = 0  # links to a film the same conversation mentions as @id elsewhere: typed titles
    typed_links = 0  # links to a checked plain-text title of that message
    typed_groups = {(c, n, titles.group_of[catalog.index(i)]) for c, n, i in typed if i in catalog}

    def find(text: str, prefer: Collection[str], conv: Conversation, n_msg: int, part: str, good: set[int]) -> list:
        if links is None:
            return linker.find(text, prefer=prefer)
        rec: list = []
        found = linker.find(text, prefer=prefer, record=rec)
        for m, feats, stage in rec:
            links.append({"conversation": conv.id, "message_index": n_msg, "part": part, "stage": stage,
                          "text": m.text, "item": m.item_id, "features": feats,
                          "label": int(titles.group_of[catalog.index(m.item_id)] in good)})
        return found
    for conv in conversations:
        mentioned = conv.mentioned()
        in_dialogue = {titles.group_of[catalog.index(i)] for i in mentioned if i in catalog}
        for n_msg, msg in enumerate(conv.messages):
            text = msg.content
            ids = [i for i in mention_ids(text) if i in catalog]
            n_plain += 1
            bare = render_mentions(text, lambda _id: "")
            good = in_dialogue | {g for c, n, g in typed_groups if c == conv.id and n == n_msg}
            for m in find(bare, mentioned, conv, n_msg, "bare", good):  # as link_conversation: the @ids known
                group = titles.group_of[catalog.index(m.item_id)]
                if group in in_dialogue:
                    dialogue_links += 1
                    continue
                if (conv.id, n_msg, group) in typed_groups:
                    typed_links += 1
                    continue
                false_links += 1
                if len(false) < examples:
                    false.append({"conversation": conv.id, "message_index": n_msg, "message": bare, "linked": m.text,
                                  "item": catalog[m.item_id].title})
            if not ids:
                continue
            n_msgs += 1
            typed = render_mentions(text, lambda i: render_title(catalog[i].title, rng, plain_share=plain_share,
                                                                 typo_share=typo_share, cased_share=cased_share)
                                    if i in catalog else None)
            gold = {titles.group_of[catalog.index(i)] for i in ids}
            found = {titles.group_of[catalog.index(m.item_id)]: m for m in find(typed, (), conv, n_msg, "typed", gold)}
            tp += len(gold & set(found))
            fp += len(set(found) - gold)
            fn += len(gold - set(found))
            if (set(found) != gold) and len(wrong) < examples:
                wrong.append({"message": typed, "gold": sorted(catalog.items[titles.members[g][0]].title for g in gold),
                              "linked": sorted(catalog.items[titles.members[g][0]].title for g in found)})
    return {
        "precision": round(tp / max(tp + fp, 1), 4),
        "recall": round(tp / max(tp + fn, 1), 4),
        "links_right": tp, "links_wrong": fp, "mentions_missed": fn,
        "messages_with_mentions": n_msgs,
        "messages_without_mentions_checked": n_plain,
        "false_links": false_links,
        "false_links_per_1000": round(1000 * false_links / max(n_plain, 1), 3),
        "links_to_films_of_the_conversation": dialogue_links,
        "links_to_checked_typed_titles": typed_links,
        "false_links_strict": false_links + typed_links,
        "false_links_strict_per_1000": round(1000 * (false_links + typed_links) / max(n_plain, 1), 3),
        "links_per_1000_any": round(1000 * (false_links + dialogue_links + typed_links) / max(n_plain, 1), 3),
        "examples_wrong": wrong, "examples_false_links": false,
        "protocol": {"seed": seed, "plain_share": plain_share, "typo_share": typo_share,
                     **({"cased_share": cased_share} if cased_share else {})},
    }
