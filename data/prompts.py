"""The one prompt template, shared by training (finetune/) and inference (decoding/, retrieval/).

Every task is a (prompt, completion) pair. The prompt ends with ANSWER_PREFIX; the completion is what the model
must emit (for item tasks: the item's id text form, ending where the constraint expects EOS).
Items inside free text are wrapped in ITEM_START ... ITEM_END so the constrained decoder knows where a span opens.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from dlsearch.data.formats import Conversation, render_mentions

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


def render_conversation(conv: Conversation, render_item: Callable[[str], str], *, max_messages: int | None = None) -> str:
    """Messages as 'User: ...' / 'Assistant: ...' lines, @<id> mentions rendered by render_item (title or id)."""
    msgs = conv.messages if max_messages is None else conv.messages[-max_messages:]
    lines = []
    for m in msgs:
        who = "User" if m.role == "user" else "Assistant"
        lines.append(f"{who}: {render_mentions(m.content, render_item)}")
    return "\n".join(lines)


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


def ensure_pad_token(tokenizer: Any) -> None:
    """Give a tokenizer without a pad token its EOS as pad (the common choice for causal LMs: batches mask pads, and
    generation stops at EOS anyway). The one home of this fix; model loaders and generation paths call it."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


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

