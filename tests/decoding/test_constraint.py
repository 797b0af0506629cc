"""TrieConstraint inside real `generate` calls: property tests over random catalogs and settings, then one test per
edge case. Every check reads the raw `generate` output, before any filtering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessor, LogitsProcessorList

from dlsearch.decoding.constraint import TrieConstraint
from dlsearch.decoding.index import index_from_sequences

from decoding_fixtures import BothBackends, make_model, random_prompts

EOS, PAD, LOW = 2, 0, 5  # token ids: items use tokens >= LOW
V = 32
MODEL = make_model(V, seed=1, eos=EOS, pad=PAD)


class Adversary(LogitsProcessor):
    """Runs before the constraint: boosts random (mostly disallowed) tokens and sets random tokens, the end token
    included, to -inf, so the constraint must cope with -inf allowed scores (transformers#22890)."""

    def __init__(self, seed: int, p_inf: float = 0.5):
        self.g = torch.Generator().manual_seed(seed)
        self.p_inf = p_inf

    def __call__(self, input_ids, scores):
        r = torch.rand(scores.shape, generator=self.g)
        scores = scores + 50.0 * (r > 0.9)
        return scores.masked_fill(r < self.p_inf, -float("inf"))


def check_outputs(sequences: torch.Tensor, prompt_width: int, items: set[tuple[int, ...]],
                  scores: torch.Tensor | None = None, n_beams: int = 1) -> int:
    """Every returned row: the tokens of one catalog item, then EOS, then only fill (EOS or pad).

    The one exception is beam search's own placeholder slot when there are fewer items than beams: transformers
    fills a slot that holds no finished hypothesis with score -1e9 and, through float32 ties (log-prob - 1e9 rounds
    to -1e9), sometimes with the prefix of a still-running beam. Such slots rank after every real hypothesis and are
    dropped by DirectSearch; every row with a real score is a complete item."""
    gen = sequences[:, prompt_width:].tolist()
    for i, row in enumerate(gen):
        if scores is not None and float(scores[i]) <= -1e8:
            assert len(items) < n_beams, f"placeholder slot although there are {len(items)} items for {n_beams} beams"
            continue
        assert EOS in row, f"no end token: {row}"
        k = row.index(EOS)
        assert tuple(row[:k]) in items, f"output {row[:k]} is not a catalog item"
        assert all(t in (EOS, PAD) for t in row[k:]), f"tokens after the end: {row}"
    return len(gen)


def run(seqs, setting, batch, seed, *, adversary=False, deny=None, allow=None, max_extra=1, backend="numpy"):
    index = index_from_sequences([f"i{i}" for i in range(len(seqs))], seqs, vocab_size=V, end_token_id=EOS)
    rng = np.random.default_rng(seed)
    ids, mask = random_prompts(rng, batch, V, pad=PAD, low=LOW)
    nb = setting.get("num_beams", 1)
    rpq = max(nb, setting.get("num_return_sequences", 1))
    procs = [Adversary(seed)] if adversary else []
    procs.append(TrieConstraint(index, eos_token_id=EOS, rows_per_query=rpq, allow=allow, deny=deny, backend=backend))
    torch.manual_seed(seed)
    out = MODEL.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(map(len, seqs)) + max_extra,
                         logits_processor=LogitsProcessorList(procs), pad_token_id=PAD, eos_token_id=EOS,
                         return_dict_in_generate=True, output_scores=True, **setting)
    return out, ids.shape[1], index


@st.composite
def catalogs(draw):
    n = draw(st.integers(1, 25))
    seqs = draw(st.lists(st.lists(st.integers(LOW, V - 1), min_size=1, max_size=4).map(tuple), min_size=n, max_size=n,
                         unique=True))
    if draw(st.booleans()):  # add prefixes of existing ids: they may end or continue
        seqs = list(dict.fromkeys(seqs + [s[:-1] for s in seqs if len(s) > 1]))
    return [list(s) for s in seqs]


@st.composite
def decoding_settings(draw):
    kind = draw(st.sampled_from(["greedy", "beam", "sample", "beam_sample"]))
    if kind == "greedy":
        return {"num_beams": 1, "do_sample": False}
    if kind == "sample":
        return {"do_sample": True, "num_return_sequences": draw(st.integers(1, 8)),
                "temperature": draw(st.sampled_from([0.5, 1.0, 2.0])), "top_k": 0}
    nb = draw(st.integers(2, 50))
    return {"num_beams": nb, "num_return_sequences": draw(st.integers(1, nb)), "do_sample": kind == "beam_sample",
            "length_penalty": draw(st.sampled_from([0.0, 1.0]))}


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: it re-runs generate for minutes
@given(seqs=catalogs(), setting=decoding_settings(), batch=st.integers(1, 6), seed=st.integers(0, 10_000),
       adversary=st.booleans(), backend=st.sampled_from(["numpy", "torch"]))
def test_property_raw_outputs_are_complete_catalog_items(seqs, setting, batch, seed, adversary, backend):
    if setting.get("do_sample") and setting.get("num_beams", 1) > 1:
        # beam sampling draws num_beams*2 candidates without replacement; it needs that many finite scores
        total = sum(1 for _ in seqs)
        if adversary or total < 2 * setting["num_beams"]:
            setting = {**setting, "do_sample": False}
    out, width, _ = run(seqs, setting, batch, seed, adversary=adversary, backend=backend)
    checked = check_outputs(out.sequences, width, {tuple(s) for s in seqs},
                            getattr(out, "sequences_scores", None), setting.get("num_beams", 1))
    assert checked == batch * setting.get("num_return_sequences", 1)  # every returned row was checked


@st.composite
def lists_for(draw, names, n_q):
    kind = draw(st.sampled_from(["none", "deny", "allow", "both"]))
    pick = st.lists(st.sampled_from(names + ["unknown"]), max_size=len(names))
    per_q = lambda: [draw(st.one_of(st.none(), pick)) for _ in range(n_q)]  # noqa: E731
    return (per_q() if kind in ("allow", "both") else None, per_q() if kind in ("deny", "both") else None)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(seqs=catalogs(), setting=decoding_settings(), batch=st.integers(1, 5), seed=st.integers(0, 10_000),
       adversary=st.booleans(), updates=st.integers(0, 3), data=st.data())
def test_property_torch_backend_equals_numpy(seqs, setting, batch, seed, adversary, updates, data):
    """The torch backend allows exactly the numpy backend's tokens at every step of real generate calls: random
    tries, prompts, decoding settings, allow/deny lists, retired items and a delta segment."""
    if setting.get("do_sample") and setting.get("num_beams", 1) > 1:
        setting = {**setting, "do_sample": False}
    names = [f"i{i}" for i in range(len(seqs))]
    split = len(seqs) - (updates if updates < len(seqs) else 0)
    index = index_from_sequences(names[:split], seqs[:split], vocab_size=V, end_token_id=EOS)
    if split < len(seqs):  # the last items arrive through the delta trie
        index.add_items(names[split:], seqs[split:])
    if updates >= 2 and len(seqs) > 1:
        index.retire_items([names[0]])
    rpq = max(setting.get("num_beams", 1), setting.get("num_return_sequences", 1))
    allow, deny = data.draw(lists_for(names, batch))
    proc = BothBackends(index, eos_token_id=EOS, rows_per_query=rpq, allow=allow, deny=deny)
    procs = ([Adversary(seed)] if adversary else []) + [proc]
    ids, mask = random_prompts(np.random.default_rng(seed), batch, V, pad=PAD, low=LOW)
    torch.manual_seed(seed)
    MODEL.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(map(len, seqs)) + 1,
                   logits_processor=LogitsProcessorList(procs), pad_token_id=PAD, eos_token_id=EOS, **setting)
    assert proc.steps >= 1


def test_bulk_ten_thousand_generations():
    """>= 10,000 generations in a few batched calls (sampling and 50-beam search), 0 outside the catalog."""
    rng = np.random.default_rng(7)
    seqs = sorted({tuple(int(t) for t in rng.integers(LOW, V, size=int(rng.integers(1, 5)))) for _ in range(200)})
    seqs = [list(s) for s in seqs] + [list(s[:1]) for s in seqs[:20]]
    seqs = [list(s) for s in dict.fromkeys(map(tuple, seqs))]
    items = {tuple(s) for s in seqs}
    n = 0
    out, width, _ = run(seqs, {"do_sample": True, "num_return_sequences": 100, "top_k": 0}, 40, 1, adversary=True)
    n += check_outputs(out.sequences, width, items)
    out, width, _ = run(seqs, {"do_sample": True, "num_return_sequences": 100, "top_k": 0, "temperature": 3.0}, 40, 2)
    n += check_outputs(out.sequences, width, items)
    out, width, _ = run(seqs, {"num_beams": 50, "num_return_sequences": 50}, 40, 3, adversary=True)
    n += check_outputs(out.sequences, width, items, out.sequences_scores, 50)
    assert n >= 10_000, n


# --- one test per edge case ----------------------------------------------------------------------------------------

def test_all_allowed_scores_neg_inf_still_emits_allowed_token():
    class KillAllowed(LogitsProcessor):  # -inf everywhere except two disallowed tokens
        def __call__(self, input_ids, scores):
            out = torch.full_like(scores, -float("inf"))
            out[:, 30:] = 10.0
            return out

    seqs = [[5, 6], [7]]
    index = index_from_sequences(["a", "b"], seqs, vocab_size=V, end_token_id=EOS)
    ids, mask = random_prompts(np.random.default_rng(0), 3, V, pad=PAD, low=LOW)
    for setting in ({"num_beams": 1}, {"num_beams": 3, "num_return_sequences": 2}, {"do_sample": True}):
        proc = TrieConstraint(index, eos_token_id=EOS, rows_per_query=setting.get("num_beams", 1))
        out = MODEL.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, pad_token_id=PAD, eos_token_id=EOS,
                             logits_processor=LogitsProcessorList([KillAllowed(), proc]), **setting)
        check_outputs(out, ids.shape[1], {tuple(s) for s in seqs})


def test_prefix_ids_may_end_or_continue():
    seqs = [[5], [5, 6], [5, 6, 7]]
    out, width, _ = run(seqs, {"num_beams": 6, "num_return_sequences": 3}, 2, 0)
    got = out.sequences[:, width:].tolist()
    ends = {tuple(r[: r.index(EOS)]) for r in got}
    assert ends == {(5,), (5, 6), (5, 6, 7)}  # every prefix id is returned: ending early is allowed


def test_left_padding_constraint_starts_after_prompt():
    # prompts of different lengths, padded on the left; prompt tokens (which are not items) must not affect state
    seqs = [[9, 10], [11]]
    index = index_from_sequences(["a", "b"], seqs, vocab_size=V, end_token_id=EOS)
    ids = torch.tensor([[PAD, PAD, PAD, 9], [12, 13, 14, 15]])
    mask = torch.tensor([[0, 0, 0, 1], [1, 1, 1, 1]])
    proc = TrieConstraint(index, eos_token_id=EOS)
    out = MODEL.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, pad_token_id=PAD, eos_token_id=EOS,
                         logits_processor=LogitsProcessorList([proc]))
    check_outputs(out, 4, {tuple(s) for s in seqs})


def test_beam_reorder_state_follows_tokens():
    # a processor that prefers the *second* beam's continuation forces reordering; all returned items stay valid
    class Shuffle(LogitsProcessor):
        def __call__(self, input_ids, scores):
            perm = torch.randperm(scores.shape[1], generator=torch.Generator().manual_seed(int(input_ids.sum())))
            return scores + 5 * torch.rand(scores.shape[1], generator=torch.Generator().manual_seed(3))[perm]

    rng = np.random.default_rng(3)
    seqs = [list(map(int, rng.integers(LOW, V, size=4))) for _ in range(60)]
    seqs = [list(s) for s in dict.fromkeys(map(tuple, seqs))]
    index = index_from_sequences([str(i) for i in range(len(seqs))], seqs, vocab_size=V, end_token_id=EOS)
    ids, mask = random_prompts(rng, 4, V, pad=PAD, low=LOW)
    proc = TrieConstraint(index, eos_token_id=EOS, rows_per_query=12)
    out = MODEL.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, num_beams=12, num_return_sequences=12,
                         pad_token_id=PAD, eos_token_id=EOS, logits_processor=LogitsProcessorList([Shuffle(), proc]),
                         return_dict_in_generate=True, output_scores=True)
    check_outputs(out.sequences, ids.shape[1], {tuple(s) for s in seqs})
    # the beams were really reordered: some step's beam_indices is not the identity
    bi = out.beam_indices[:, : out.beam_indices.shape[1]]
    assert (bi[:, 1:] != bi[:, :1]).any()


def test_sampling_respects_constraint():
    seqs = [[5, 6, 7], [8, 9], [10]]
    out, width, _ = run(seqs, {"do_sample": True, "num_return_sequences": 50, "temperature": 5.0, "top_k": 0}, 4, 5,
                        adversary=True)
    assert check_outputs(out.sequences, width, {tuple(s) for s in seqs}) == 200


def test_more_beams_than_items_dead_beams_rank_last():
    seqs = [[5, 6], [7]]
    out, width, _ = run(seqs, {"num_beams": 10, "num_return_sequences": 10}, 2, 0)
    check_outputs(out.sequences, width, {tuple(s) for s in seqs}, out.sequences_scores, 10)
    scores = out.sequences_scores.view(2, 10)
    # the two real items come first with real log-probs; every other slot has a placeholder score
    assert (scores[:, :2] > -100).all() and (scores[:, 2:] < -1e6).all()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_dead_end_beam_forced_to_eos(backend):
    index = index_from_sequences(["a"], [[5, 6]], vocab_size=V, end_token_id=EOS)
    proc = TrieConstraint(index, eos_token_id=EOS, backend=backend)
    ids = torch.tensor([[20, 21, 22]])
    proc(ids, torch.zeros(1, V))
    s = proc(torch.tensor([[20, 21, 22, 9]]), torch.zeros(1, V))  # 9 is not allowed after the prompt: dead row
    assert torch.isfinite(s[0]).nonzero().flatten().tolist() == [EOS]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_deny_and_allow_lists_without_rebuild(backend):
    seqs = [[5, 6], [5, 7], [8], [9, 10, 11]]
    names = ["a", "b", "c", "d"]
    index = index_from_sequences(names, seqs, vocab_size=V, end_token_id=EOS)
    ids, mask = random_prompts(np.random.default_rng(0), 2, V, pad=PAD, low=LOW)
    proc = TrieConstraint(index, eos_token_id=EOS, rows_per_query=4, deny=[["a", "c"], None], allow=[None, ["d", "b"]], backend=backend)
    out = MODEL.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, num_beams=4, num_return_sequences=4,
                         pad_token_id=PAD, eos_token_id=EOS, logits_processor=LogitsProcessorList([proc]),
                         return_dict_in_generate=True, output_scores=True)
    seq = out.sequences[:, ids.shape[1]:].tolist()
    sc = out.sequences_scores.tolist()
    got = [{tuple(r[: r.index(EOS)]) for r, s in zip(seq[q * 4:(q + 1) * 4], sc[q * 4:(q + 1) * 4]) if s > -1e6}
           for q in range(2)]
    assert got[0] == {(5, 7), (9, 10, 11)}
    assert got[1] == {(5, 7), (9, 10, 11)}


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_processor_reused_across_generate_calls(backend):
    seqs = [[5, 6], [7, 8, 9]]
    index = index_from_sequences(["a", "b"], seqs, vocab_size=V, end_token_id=EOS)
    proc = TrieConstraint(index, eos_token_id=EOS, rows_per_query=3, backend=backend)
    rng = np.random.default_rng(1)
    for _ in range(3):
        ids, mask = random_prompts(rng, 2, V, pad=PAD, low=LOW)
        out = MODEL.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, num_beams=3, num_return_sequences=2,
                             pad_token_id=PAD, eos_token_id=EOS, logits_processor=LogitsProcessorList([proc]))
        check_outputs(out, ids.shape[1], {tuple(s) for s in seqs})


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_allow_list_without_any_item_only_ends(backend):
    index = index_from_sequences(["a", "b"], [[5, 6], [7]], vocab_size=V, end_token_id=EOS)
    proc = TrieConstraint(index, eos_token_id=EOS, rows_per_query=1, allow=[["unknown"], ["b"]], backend=backend)
    s = proc(torch.tensor([[20, 21], [22, 23]]), torch.zeros(2, V))
    assert torch.isfinite(s[0]).nonzero().flatten().tolist() == [EOS]  # no item left: end at once, an empty output
    assert torch.isfinite(s[1]).nonzero().flatten().tolist() == [7]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_retired_items_masked_for_every_row(backend):
    index = index_from_sequences(["a", "b", "c"], [[5, 6], [5, 7], [8]], vocab_size=V, end_token_id=EOS)
    index.retire_items(["b", "c"])
    proc = TrieConstraint(index, eos_token_id=EOS, backend=backend)
    s = proc(torch.tensor([[20, 21], [22, 23], [24, 25]]), torch.zeros(3, V))
    assert [torch.isfinite(r).nonzero().flatten().tolist() for r in s] == [[5]] * 3
    s = proc(torch.tensor([[20, 21, 5], [22, 23, 5], [24, 25, 5]]), torch.zeros(3, V))
    assert [torch.isfinite(r).nonzero().flatten().tolist() for r in s] == [[6]] * 3


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_nan_and_neg_inf_scores_never_open_disallowed_tokens(backend):
    index = index_from_sequences(["a", "b"], [[5, 6], [7]], vocab_size=V, end_token_id=EOS)
    proc = TrieConstraint(index, eos_token_id=EOS, backend=backend)
    nan = torch.full((2, V), float("nan"))
    nan[1] = -float("inf")
    s = proc(torch.tensor([[20, 21], [22, 23]]), nan)
    assert [torch.isfinite(r).nonzero().flatten().tolist() for r in s] == [[5, 7]] * 2
    assert (s.nan_to_num(nan=1e9) <= 0).all()  # no NaN left anywhere: argmax cannot land on a disallowed token
    nan = torch.full((2, V), float("nan"))
    s = proc(torch.tensor([[20, 21, 5], [22, 23, 7]]), nan)
    assert [torch.isfinite(r).nonzero().flatten().tolist() for r in s] == [[6], [EOS]]
    assert not s.isnan().any()


# --- regressions (issue 14) ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_reused_processor_new_call_one_token_longer_prompt(backend):
    """A processor reused for a second call with as many rows and a prompt exactly one token longer than the first
    call's last step used to take the new prompt's last token for a generated one: every output came back empty."""
    seqs = [[5, 6], [7, 8, 9]]
    index = index_from_sequences(["a", "b"], seqs, vocab_size=V, end_token_id=EOS)
    proc = TrieConstraint(index, eos_token_id=EOS, backend=backend)
    ids = torch.tensor([[20, 21, 22], [23, 24, 25]])
    MODEL.generate(input_ids=ids, max_new_tokens=1, pad_token_id=PAD, eos_token_id=EOS,
                   logits_processor=LogitsProcessorList([proc]))  # last processor call: width 3
    ids2 = torch.tensor([[30, 21, 22, 26], [23, 29, 25, 27]])  # width 4 = 3 + 1, same rows, new prompts
    out = MODEL.generate(input_ids=ids2, max_new_tokens=4, pad_token_id=PAD, eos_token_id=EOS,
                         logits_processor=LogitsProcessorList([proc]))
    assert check_outputs(out, 4, {tuple(s) for s in seqs}) == 2


def test_max_new_tokens_below_longest_code_refused():
    from dlsearch.decoding.constraint import check_max_new_tokens

    index = index_from_sequences(["a", "b"], [[5, 6], [7, 8, 9]], vocab_size=V, end_token_id=EOS)
    check_max_new_tokens(index, 4)  # longest code 3 + EOS
    with pytest.raises(ValueError, match="max_new_tokens 3 .* longest item's 3 tokens"):
        check_max_new_tokens(index, 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        TrieConstraint(index, eos_token_id=EOS, max_new_tokens=2)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(seqs=catalogs(), batch=st.integers(1, 4), seed=st.integers(0, 10_000), updates=st.integers(0, 3),
       data=st.data())
def test_property_sparse_allowed_pairs_equal_dense_mask(seqs, batch, seed, updates, data):
    """DeviceTrieState.allowed_pairs (the beam search's sparse candidates) lists exactly the dense mask's tokens,
    sorted by row then token, along random walks (mostly allowed tokens, some not: dead rows, and EOS: done rows),
    with allow/deny lists, a delta segment and retired items."""
    names = [f"i{i}" for i in range(len(seqs))]
    split = len(seqs) - (updates if updates < len(seqs) else 0)
    index = index_from_sequences(names[:split], seqs[:split], vocab_size=V, end_token_id=EOS)
    if split < len(seqs):
        index.add_items(names[split:], seqs[split:])
    if updates >= 2 and len(seqs) > 1:
        index.retire_items([names[0]])
    allow, deny = data.draw(lists_for(names, batch))
    proc = TrieConstraint(index, eos_token_id=EOS, rows_per_query=1, allow=allow, deny=deny, backend="torch")
    dev = torch.device("cpu")
    state = proc.device_state(dev, V)
    q = proc.query_rows(batch, dev)
    phase, nodes = state.initial(torch.zeros(batch, dtype=torch.int64))
    g = torch.Generator().manual_seed(seed)
    for _ in range(max(map(len, seqs)) + 2):
        dense = state.allowed(phase, nodes, q, V)
        rows, toks = state.allowed_pairs(phase, nodes, q, V)
        want_rows, want_toks = dense.nonzero(as_tuple=True)
        assert torch.equal(rows, want_rows) and torch.equal(toks, want_toks)
        pick = torch.multinomial(dense.float() + 0.05, 1, generator=g)[:, 0]  # mostly allowed tokens
        phase, nodes = state.advance(phase, nodes, pick, q)
