"""The one prompt template, shared by training (finetune/) and inference (decoding/, retrieval/).

Every task is a (prompt, completion) pair. The prompt ends with ANSWER_PREFIX; the completion is what the model
must emit (for item tasks: the item's id text form, ending where the constraint expects EOS).
Items inside free text are wrapped in ITEM_START ... ITEM_END so the constrained decoder knows where a span opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from dlsearch.data.formats import Conversation, format_mention, render_mentions

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
    "conversation->mention",
    "history->next_item",
)

_INSTRUCTIONS = {
    "title->id": "Give the catalog id of this item.",
    "id->title": "Give the title of this catalog item.",
    "item->concepts": "List the concepts of this catalog item.",
    "conversation->item": "Recommend one catalog item for this conversation.",
    "conversation->concepts": "List the concepts of an item to recommend for this conversation.",
    "conversation->query": "Write a short search query for an item to recommend for this conversation.",
    "conversation->mention": "Name one catalog item the user could mention next in this conversation.",
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
    """A user's items, oldest first, one per line (history->next_item context); an item the catalog (or id map) does
    not know is written as its mention (data.formats.format_mention), as an unknown mention in a message stays."""
    return "\n".join(item_text_in_prompt(i, catalog, render=render, idmap=idmap) or format_mention(i) for i in item_ids)


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



# --- length policy: the same at training and inference -----------------------------------------------------------

KEPT, CUT, DROPPED = "kept", "cut", "dropped"


def _n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])  # as trl tokenizes a prompt (with BOS if any)


def fit_context_prompt(task: str, parts: Sequence[str], tokenizer: Any, budget: int, *, joiner: str = "\n") -> tuple[str | None, str]:
    """The prompt of a context task whose context parts (rendered messages, or history items; oldest first) fit
    `budget` tokens (max_length minus the completion's reserved tokens). Contexts are cut from the LEFT: whole
    parts first, then tokens of the oldest part kept; the completion is never cut. Returns (prompt, KEPT | CUT),
    or (None, DROPPED) when not even the instruction and one token of context fit.

    Training (data.examples via finetune) and inference (decoding.generate, decoding.direct) call this with the
    same budget, so a prompt cut in training is cut the same way at inference."""
    parts = list(parts)
    full = prompt_for_context(task, joiner.join(parts))
    if _n_tokens(tokenizer, full) <= budget:
        return full, KEPT
    lo, hi, best = 1, len(parts) - 1, None  # most recent parts that fit: the token count grows with their number
    while lo <= hi:
        mid = (lo + hi) // 2
        if _n_tokens(tokenizer, prompt_for_context(task, joiner.join(parts[-mid:]))) <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    if best is not None:
        return prompt_for_context(task, joiner.join(parts[-best:])), CUT
    ids = tokenizer(parts[-1] if parts else "", add_special_tokens=False)["input_ids"]
    keep = budget - _n_tokens(tokenizer, prompt_for_context(task, ""))
    while keep > 0:
        prompt = prompt_for_context(task, tokenizer.decode(ids[-keep:]))
        if _n_tokens(tokenizer, prompt) <= budget:
            return prompt, CUT
        keep -= 1
    return None, DROPPED


@dataclass
class LengthBudget:
    """The length policy of one training stage (or one inference setting): prompt + completion within max_length
    tokens; `reserve` tokens kept for the completion (None: the example's own completion + EOS). Counts of kept,
    cut and dropped examples per task accumulate in `counts`."""

    tokenizer: Any
    max_length: int
    reserve: int | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def fit(self, task: str, parts: Sequence[str], completion: str) -> str | None:
        """The fitted prompt (None: dropped), counted under task."""
        reserve = self.reserve if self.reserve is not None else len(self.tokenizer(completion, add_special_tokens=False)["input_ids"]) + 1
        prompt, status = fit_context_prompt(task, parts, self.tokenizer, self.max_length - reserve)
        c = self.counts.setdefault(task, {KEPT: 0, CUT: 0, DROPPED: 0})
        c[status] += 1
        return prompt


def conversation_parts(conv: Conversation, catalog: "Catalog", *, render: str = "title", idmap: "IdMap | None" = None,
                       max_messages: int | None = None) -> list[str]:
    """The rendered lines of render_conversation, one per message (what fit_context_prompt cuts whole)."""
    msgs = conv.messages if max_messages is None else conv.messages[-max_messages:]
    return [render_conversation(Conversation(conv.id, [m]), catalog, render=render, idmap=idmap) for m in msgs]


def answer_context(tokenizer: Any) -> str:
    """The text a whole-output completion follows: the answer prefix, then, for a chat model, the rest of its
    template's generation prompt ("\n### Answer:<|im_end|>\n<|im_start|>assistant\n" for SmolLM2)."""
    rendered = apply_chat_template(tokenizer, ANSWER_PREFIX)
    return rendered[rendered.rindex(ANSWER_PREFIX):]


def chat_completion(tokenizer: Any, completion: str) -> str:
    """The completion text a model is trained on and constrained to after the answer context: make_completion's
    leading space, unless the tokenizer is a chat model's and that space merges with the end of its generation prompt
    (SmolLM2: "assistant\n" + " <a_0>" tokenizes "\n " as one token), in which case the space is dropped. Training
    (finetune.train.stage_dataset) and the trie (item_token_ids) both go through here, so they agree per item."""
    if not completion.startswith(" ") or not getattr(tokenizer, "chat_template", None):
        return completion
    context = answer_context(tokenizer)
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    ids = tokenizer(context + completion, add_special_tokens=False)["input_ids"]
    return completion if ids[: len(ctx)] == ctx else completion[1:]
