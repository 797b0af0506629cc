"""The one prompt template, shared by training (finetune/) and inference (decoding/, retrieval/).

Every task is a (prompt, completion) pair. The prompt ends with ANSWER_PREFIX; the completion is what the model
must emit (for item tasks: the item's id text form, ending where the constraint expects EOS).
Items inside free text are wrapped in ITEM_START ... ITEM_END so the constrained decoder knows where a span opens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from dlsearch.data.formats import Conversation, render_mentions

if TYPE_CHECKING:
    from dlsearch.data.catalog import Catalog
    from dlsearch.data.ids import IdMap

ITEM_START = "<item>"
ITEM_END = "</item>"
SPAN_MARKERS = (ITEM_START, ITEM_END)
ANSWER_PREFIX = "\n### Answer:"
CONCEPT_SEP = ", "

TASKS = (
    "title->id",
    "id->title",
    "item->concepts",
    "conversation->item",
    "conversation->concepts",
    "conversation->query",
    "history->next_item",
)

_INSTRUCTIONS = {
    "title->id": "Give the catalog id of this item.",
    "id->title": "Give the title of this catalog item.",
    "item->concepts": "List the concepts of this catalog item.",
    "conversation->item": "Recommend one catalog item for this conversation.",
    "conversation->concepts": "List the concepts of an item to recommend for this conversation.",
    "conversation->query": "Write a short search query for an item to recommend for this conversation.",
    "history->next_item": "Given the items this user rated, in order, name the next one.",
}


def item_text_in_prompt(item_id: str, catalog: "Catalog", *, render: str = "title", idmap: "IdMap | None" = None) -> str | None:
    """How an item reads inside a prompt: its title (stripped: surrounding whitespace of a catalog title is not
    part of the name) or, with render="id", its id code. None for an item the catalog (or id map) does not know:
    a mention of it then stays as written."""
    if render == "title":
        return catalog[item_id].title.strip() if item_id in catalog else None
    if render == "id":
        if idmap is None:
            raise ValueError("render='id' needs the id map")
        return idmap.code(item_id) if item_id in idmap.codes else None
    raise ValueError(f"render must be 'title' or 'id', got {render!r}")


def render_conversation(conv: Conversation, catalog: "Catalog", *, render: str = "title", idmap: "IdMap | None" = None,
                        max_messages: int | None = None) -> str:
    """THE conversation renderer, used by training examples, inference prompts, BM25/encoder query text and the
    service alike: messages as 'User: ...' / 'Assistant: ...' lines, mentions rendered by item_text_in_prompt."""
    msgs = conv.messages if max_messages is None else conv.messages[-max_messages:]
    lines = []
    for m in msgs:
        who = "User" if m.role == "user" else "Assistant"
        lines.append(f"{who}: {render_mentions(m.content, lambda i: item_text_in_prompt(i, catalog, render=render, idmap=idmap))}")
    return "\n".join(lines)


def render_history(item_ids: Sequence[str], catalog: "Catalog", *, render: str = "title", idmap: "IdMap | None" = None) -> str:
    """A user's items, oldest first, one per line (history->next_item context)."""
    return "\n".join(item_text_in_prompt(i, catalog, render=render, idmap=idmap) or f"@[{i}]" for i in item_ids)


def conversation_prompt(conv: Conversation, catalog: "Catalog", task: str = "conversation->item", *, render: str = "title",
                        idmap: "IdMap | None" = None, max_messages: int | None = None) -> str:
    """The prompt of a conversation task for one conversation: the same string in training and at inference."""
    return prompt_for_context(task, render_conversation(conv, catalog, render=render, idmap=idmap, max_messages=max_messages))


def make_prompt(task: str, body: str) -> str:
    """'### Task: <instruction>\\n<body>\\n### Answer:' — the exact string the model sees, in training and inference."""
    if task not in _INSTRUCTIONS:
        raise ValueError(f"unknown task {task!r}; known: {list(TASKS)}")
    return f"### Task: {_INSTRUCTIONS[task]}\n{body}{ANSWER_PREFIX}"


def make_completion(answer: str) -> str:
    """The completion text; a single leading space separates it from the prompt (tokenizers treat it stably)."""
    return " " + answer


def prompt_for_item_task(task: str, *, title: str = "", code: str = "", concepts: Sequence[str] = ()) -> dict[str, str]:
    """Catalog-indexing examples: title->id, id->title, item->concepts."""
    if task == "title->id":
        return {"prompt": make_prompt(task, f"Title: {title}"), "completion": make_completion(code)}
    if task == "id->title":
        return {"prompt": make_prompt(task, f"Id: {code}"), "completion": make_completion(title)}
    if task == "item->concepts":
        return {"prompt": make_prompt(task, f"Title: {title}"), "completion": make_completion(CONCEPT_SEP.join(concepts))}
    raise ValueError(f"not an item task: {task!r}")


def prompt_for_context(task: str, context: str) -> str:
    """Prompt for conversation->item|concepts|query and history->next_item, given rendered context text."""
    label = "History" if task == "history->next_item" else "Conversation"
    return make_prompt(task, f"{label}:\n{context}")


def apply_chat_template(tokenizer: Any, prompt: str) -> str:
    """Wrap a prompt in the tokenizer's chat template when it has one (pretrained chat models); else unchanged."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return prompt


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> Any:
    """Prompts as a left-padded batch of tensors for generation, tokenized exactly as trl's SFTTrainer tokenized them
    in training: a string prompt through tokenizer(text), so with the tokenizer's special tokens (a BOS where the
    tokenizer adds one). Every generation path (memorization, direct search, span replies, concept/query generation)
    goes through here, so a BOS-adding tokenizer sees the same context at inference as in training.
    The tokenizer's padding side is left as it was."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=True)
    finally:
        tokenizer.padding_side = side

