"""Recommender turns: the evaluation and training unit cut out of a whole dialogue.

At each message of the recommender (role "assistant"; in ReDial the dialogue's respondent) that mentions movies
not mentioned before, one record: messages = the turns before it (context), targets = the movies first mentioned
in that message, exclude = the movies mentioned earlier (they are known to the seeker; a re-mention is not a new
recommendation, and keeping it as a target would contradict `exclude`). ReDial's per-movie labels
(suggested / seen / liked from respondentQuestions) ride along in meta["labels"] and are never targets.
"""

from __future__ import annotations

from typing import Iterable

from dlsearch.data.formats import Conversation, mention_ids

RECOMMENDER_ROLE = "assistant"
SEEKER_ROLE = "user"


def _mentions(text: str) -> list[str]:
    return list(dict.fromkeys(mention_ids(text)))


def recommender_turns(dialogue: Conversation, role: str = RECOMMENDER_ROLE) -> list[Conversation]:
    """One Conversation per recommender message with new mentions (see module docstring); ids '<dialogue>:<i>'.
    role=SEEKER_ROLE cuts at the user's messages instead (seeker_turns)."""
    labels = dialogue.meta.get("respondentQuestions", {})
    earlier: dict[str, None] = {}
    out = []
    for i, msg in enumerate(dialogue.messages):
        mentioned = _mentions(msg.content)
        new = [m for m in mentioned if m not in earlier]
        if msg.role == role and new and i > 0:
            out.append(Conversation(
                id=f"{dialogue.id}:{i}",
                messages=list(dialogue.messages[:i]),
                exclude=list(earlier),
                targets=new,
                meta={"dialogue_id": dialogue.id, "turn": i,
                      **({"split": dialogue.meta["split"]} if "split" in dialogue.meta else {}),
                      "labels": {t: labels[t] for t in new if t in labels},
                      "repeated": [m for m in mentioned if m in earlier]},
            ))
        earlier.update(dict.fromkeys(mentioned))
    return out


def all_recommender_turns(dialogues: Iterable[Conversation]) -> list[Conversation]:
    return [turn for d in dialogues for turn in recommender_turns(d)]


def seeker_turns(records: Iterable[Conversation]) -> list[Conversation]:
    """The user's own new mentions as turns (the conversation->mention task): at each user message that names items
    not named before, context = the messages before it, targets = those items, ids '<dialogue>:<i>'.

    Whole dialogues (no targets) are cut directly. Turn records (prepare's splits: one per recommender turn) are
    grouped by meta["dialogue_id"] and the longest context of each dialogue is cut, since every record's messages
    are a prefix of its dialogue; user mentions after a dialogue's last recommender turn are in no record and are
    not recovered."""
    prefixes: dict[str, Conversation] = {}
    for c in records:
        key = str(c.meta.get("dialogue_id", c.id)) if c.targets else c.id
        if key not in prefixes or len(c.messages) > len(prefixes[key].messages):
            prefixes[key] = c
    meta = lambda c: {"split": c.meta["split"]} if "split" in c.meta else {}
    return [turn for key, c in prefixes.items()
            for turn in recommender_turns(Conversation(id=key, messages=list(c.messages), meta=meta(c)), role=SEEKER_ROLE)]


def as_turn_records(convs: Iterable[Conversation]) -> list[Conversation]:
    """Records with targets stay as they are; whole dialogues (no targets) are cut into recommender turns.

    Every consumer of a split (prepare, finetune, evaluation) must split THIS list with `split_conversations`:
    splitting whole dialogues instead shuffles a different list of dialogue ids and puts other dialogues in test.
    """
    convs = list(convs)
    return [c for c in convs if c.targets] + all_recommender_turns(c for c in convs if not c.targets)
