"""How well plain-text titles are linked back to items, measured on conversations with `@id` mentions (ReDial).

    report = linking_report(linker, dialogues, seed=0)     # {"precision", "recall", "false_links_per_1000", ...}

Each message with `@id` mentions is rewritten as a person would type it: every `@id` becomes the item's title,
half of them without the year and in lower case, one in ten with a typo (one letter deleted, inserted, replaced or
swapped with its neighbour, never the first letter); the linker then reads the text. A link is right when it names
the mentioned item or a member of its duplicate group (data/titles.py: the same work). False links are counted on
every message with its mentions removed: a link there is false unless it names a film that the same conversation
mentions as `@id` (people also type titles: "I just might give Deadpool a try" after "@Deadpool"); those are
counted apart, and all links per 1,000 messages are reported too.
"""

from __future__ import annotations

import random
import string
from typing import Any, Sequence

from dlsearch.data.catalog import Catalog
from dlsearch.data.formats import Conversation, mention_ids, render_mentions
from dlsearch.data.titles import split_title_year, titles_of


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


def render_title(title: str, rng: random.Random, *, plain_share: float = 0.5, typo_share: float = 0.1) -> str:
    """A title as typed: with probability plain_share without year and lower case; with typo_share one typo in
    the longest word of the title (never in the year)."""
    base, year = split_title_year(title)
    plain = rng.random() < plain_share
    if rng.random() < typo_share:
        words = base.split(" ")
        longest = max(range(len(words)), key=lambda n: (len(words[n]), -n))
        words[longest] = typo(words[longest], rng)
        base = " ".join(words)
    return base.lower() if plain else (f"{base} ({year})" if year is not None else base)


def linking_report(linker: Any, conversations: Sequence[Conversation], *, seed: int = 0, plain_share: float = 0.5,
                   typo_share: float = 0.1, examples: int = 10) -> dict[str, Any]:
    """Precision and recall of the links in rendered messages, and false links per 1,000 messages with the
    mentions removed (see module docstring). Counting is per message and per duplicate group."""
    catalog: Catalog = linker.catalog
    titles = titles_of(catalog)
    rng = random.Random(seed)
    tp = fp = fn = 0
    n_msgs = n_plain = false_links = 0
    wrong: list[dict[str, Any]] = []
    false: list[dict[str, Any]] = []
    dialogue_links = 0  # false links to a film the same conversation mentions as @id elsewhere: typed titles
    for conv in conversations:
        in_dialogue = {titles.group_of[catalog.index(i)] for i in conv.mentioned() if i in catalog}
        for msg in conv.messages:
            text = msg.content
            ids = [i for i in mention_ids(text) if i in catalog]
            n_plain += 1
            bare = render_mentions(text, lambda _id: "")
            for m in linker.find(bare):
                if titles.group_of[catalog.index(m.item_id)] in in_dialogue:
                    dialogue_links += 1
                    continue
                false_links += 1
                if len(false) < examples:
                    false.append({"message": bare, "linked": m.text, "item": catalog[m.item_id].title})
            if not ids:
                continue
            n_msgs += 1
            typed = render_mentions(text, lambda i: render_title(catalog[i].title, rng, plain_share=plain_share,
                                                                 typo_share=typo_share) if i in catalog else None)
            gold = {titles.group_of[catalog.index(i)] for i in ids}
            found = {titles.group_of[catalog.index(m.item_id)]: m for m in linker.find(typed)}
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
        "links_per_1000_any": round(1000 * (false_links + dialogue_links) / max(n_plain, 1), 3),
        "examples_wrong": wrong, "examples_false_links": false,
        "protocol": {"seed": seed, "plain_share": plain_share, "typo_share": typo_share},
    }
