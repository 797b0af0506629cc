"""The prefill-once beam search against transformers' own beam search with the same constraint: same finished
hypotheses (items and scores), over random tries, prompts, beam widths, lists and length penalties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessorList

from dlsearch.decoding.beam import constrained_beam_search
from dlsearch.decoding.constraint import TrieConstraint
from dlsearch.decoding.index import index_from_sequences

from decoding_fixtures import make_model, random_prompts

EOS, PAD, LOW = 2, 0, 5
V = 32
MODEL = make_model(V, seed=1, eos=EOS, pad=PAD)


def finished(seqs: np.ndarray, scores: np.ndarray, n: int, b: int) -> list[dict[tuple[int, ...], float]]:
    """Per prompt: {item tokens: score} of the real (non-placeholder) finished hypotheses."""
    out = []
    for q in range(n):
        d = {}
        for row, s in zip(seqs[q * b:(q + 1) * b].tolist(), scores[q * b:(q + 1) * b].tolist()):
            if s > -1e8 and EOS in row:
                d[tuple(row[: row.index(EOS)])] = s
        out.append(d)
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(n_items=st.integers(1, 40), depth=st.integers(1, 4), beams=st.integers(2, 12), batch=st.integers(1, 4),
       seed=st.integers(0, 10_000), length_penalty=st.sampled_from([0.0, 1.0]), deny=st.booleans())
def test_property_same_hypotheses_as_transformers_beam_search(n_items, depth, beams, batch, seed, length_penalty,
                                                              deny):
    rng = np.random.default_rng(seed)
    seqs = list(dict.fromkeys(tuple(int(t) for t in rng.integers(LOW, V, size=int(rng.integers(1, depth + 1))))
                              for _ in range(n_items)))
    names = [f"i{i}" for i in range(len(seqs))]
    index = index_from_sequences(names, [list(s) for s in seqs], vocab_size=V, end_token_id=EOS)
    ids, mask = random_prompts(rng, batch, V, pad=PAD, low=LOW)
    lists = [names[: len(names) // 3] if deny and q % 2 == 0 else None for q in range(batch)]
    max_new = max(map(len, seqs)) + 1
    ref = MODEL.generate(input_ids=ids, attention_mask=mask, num_beams=beams, num_return_sequences=beams,
                         do_sample=False, max_new_tokens=max_new, pad_token_id=PAD, eos_token_id=EOS,
                         length_penalty=length_penalty, early_stopping=True, return_dict_in_generate=True,
                         output_scores=True, logits_processor=LogitsProcessorList(
                             [TrieConstraint(index, eos_token_id=EOS, rows_per_query=beams, deny=lists)]))
    want = finished(ref.sequences[:, ids.shape[1]:].numpy(), ref.sequences_scores.numpy(), batch, beams)
    proc = TrieConstraint(index, eos_token_id=EOS, rows_per_query=beams, deny=lists)
    got_seqs, got_scores = constrained_beam_search(MODEL, ids, mask, proc, num_beams=beams, max_new_tokens=max_new,
                                                   pad_token_id=PAD, length_penalty=length_penalty)
    got = finished(got_seqs.numpy(), got_scores.numpy(), batch, beams)
    for w, g in zip(want, got):
        assert set(w) == set(g)
        assert all(abs(w[k] - g[k]) < 1e-4 for k in w)


def test_refuses_short_budget_and_span_index():
    index = index_from_sequences(["a"], [[5, 6, 7]], vocab_size=V, end_token_id=EOS)
    ids, mask = random_prompts(np.random.default_rng(0), 2, V, pad=PAD, low=LOW)
    with pytest.raises(ValueError, match="max_new_tokens"):
        constrained_beam_search(MODEL, ids, mask, TrieConstraint(index, eos_token_id=EOS), num_beams=2,
                                max_new_tokens=3, pad_token_id=PAD)
    with pytest.raises(ValueError, match="rows_per_query"):
        constrained_beam_search(MODEL, ids, mask, TrieConstraint(index, eos_token_id=EOS, rows_per_query=3,
                                                                  deny=[["a"], None]),
                                num_beams=2, max_new_tokens=4, pad_token_id=PAD)


def reference(index, ids, mask, beams, max_new, length_penalty=0.0, lists=None):
    """transformers' own constrained beam search: the finished hypotheses per prompt."""
    ref = MODEL.generate(input_ids=ids, attention_mask=mask, num_beams=beams, num_return_sequences=beams,
                         do_sample=False, max_new_tokens=max_new, pad_token_id=PAD, eos_token_id=EOS,
                         length_penalty=length_penalty, early_stopping=True, return_dict_in_generate=True,
                         output_scores=True, logits_processor=LogitsProcessorList(
                             [TrieConstraint(index, eos_token_id=EOS, rows_per_query=beams, deny=lists)]))
    return finished(ref.sequences[:, ids.shape[1]:].numpy(), ref.sequences_scores.numpy(), ids.shape[0], beams)


def forwards(fn):
    """Run fn, recording the input_ids shape of every forward of MODEL."""
    shapes = []
    hook = MODEL.model.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                                with_kwargs=True)
    try:
        out = fn()
    finally:
        hook.remove()
    return out, shapes


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(n_stems=st.integers(1, 6), tail=st.integers(0, 7), prefixes=st.booleans(), beams=st.integers(2, 12),
       batch=st.integers(1, 3), seed=st.integers(0, 10_000), length_penalty=st.sampled_from([0.0, 1.0]),
       deny=st.booleans())
def test_property_forced_runs_eos_and_few_items(n_stems, tail, prefixes, beams, batch, seed, length_penalty, deny):
    """Titles' shape: a few branching tokens, then a long forced tail (fed in one forward); items that are prefixes
    of others (EOS competes with a continuation); often fewer items than beams (placeholders fill the rest)."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_stems):
        stem = [int(t) for t in rng.integers(LOW, LOW + 4, size=int(rng.integers(1, 3)))]  # shared first tokens
        full = stem + [int(t) for t in rng.integers(LOW, V, size=tail)]
        seqs.append(tuple(full))
        if prefixes and len(full) > 1:
            seqs.append(tuple(full[: int(rng.integers(1, len(full)))]))
    seqs = list(dict.fromkeys(seqs))
    names = [f"i{i}" for i in range(len(seqs))]
    index = index_from_sequences(names, [list(s) for s in seqs], vocab_size=V, end_token_id=EOS)
    ids, mask = random_prompts(rng, batch, V, pad=PAD, low=LOW)
    lists = [names[:1] if deny and q == 0 else None for q in range(batch)]
    max_new = max(map(len, seqs)) + 1
    want = reference(index, ids, mask, beams, max_new, length_penalty, lists)
    proc = TrieConstraint(index, eos_token_id=EOS, rows_per_query=beams, deny=lists)
    (got_seqs, got_scores), shapes = forwards(lambda: constrained_beam_search(
        MODEL, ids, mask, proc, num_beams=beams, max_new_tokens=max_new, pad_token_id=PAD,
        length_penalty=length_penalty))
    got = finished(got_seqs.numpy(), got_scores.numpy(), batch, beams)
    for w, g in zip(want, got):
        assert set(w) == set(g)
        assert all(abs(w[k] - g[k]) < 1e-4 for k in w)
    assert shapes[0] == tuple(ids.shape) and all(s[0] == batch for s in shapes)


def test_prompt_runs_through_the_model_once_and_forced_runs_in_one_forward():
    """The prefill sees each prompt once (n rows), not n x beams; later forwards feed tree nodes (n rows, any
    width). Two items that share nothing after their first token: after it, the rest of each item is forced and
    fed in the same forward, so the search needs two forwards after the prefill for 7 steps."""
    index = index_from_sequences(["a", "b"], [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]], vocab_size=V,
                                 end_token_id=EOS)
    ids, mask = random_prompts(np.random.default_rng(1), 3, V, pad=PAD, low=LOW)
    want = reference(index, ids, mask, 4, 7)
    (seqs, scores), shapes = forwards(lambda: constrained_beam_search(
        MODEL, ids, mask, TrieConstraint(index, eos_token_id=EOS), num_beams=4, max_new_tokens=7, pad_token_id=PAD))
    got = finished(seqs.numpy(), scores.numpy(), 3, 4)
    assert [set(g) for g in got] == [set(w) for w in want] == [{(5, 6, 7, 8, 9, 10), (11, 12, 13, 14, 15, 16)}] * 3
    assert all(abs(w[k] - g[k]) < 1e-4 for w, g in zip(want, got) for k in w)
    # prefill; then each prompt's two beams feed their first token plus the 5 forced ones (12 tokens); the step
    # after reads only known nodes until EOS: no further forward
    assert shapes == [tuple(ids.shape), (3, 12)]


@pytest.mark.filterwarnings("ignore:DirectSearch.search got")  # raw test prompts on purpose
def test_direct_search_prefill_once_equals_generate_path():
    """DirectSearch's default decoder gives today's transformers-beam top-k: same items, scores within 1e-4."""
    from dlsearch.data.catalog import Catalog, Item
    from dlsearch.data.ids import build_idmap
    from dlsearch.decoding.direct import DirectSearch
    from dlsearch.decoding.index import build_index

    from decoding_fixtures import make_tokenizer

    titles = ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)", "The Matrix (1999)", "Grumpier Old Men (1995)",
              "Waiting to Exhale (1995)", "Father of the Bride Part II (1995)", "Sabrina (1995)", "Balto (1995)",
              "Tom and Huck (1995)", "Sudden Death (1995)", "GoldenEye (1995)"]
    catalog = Catalog([Item(str(100 + i), t) for i, t in enumerate(titles)])
    tok = make_tokenizer()
    model = make_model(len(tok), seed=3, eos=tok.eos_token_id, pad=tok.pad_token_id, bos=tok.bos_token_id)
    index = build_index(catalog, build_idmap(catalog, "title"), tok)
    prompts = ["User: hello\nAssistant:", "I suggest", "### Task: Give the catalog id of this item.\nTitle: Heat"]
    exclude = [["100", "102"], None, ["105"]]
    for lp in (0.0, 1.0):
        old = DirectSearch(model, tok, index, catalog, beams=8, length_penalty=lp, decoder="generate")
        new = DirectSearch(model, tok, index, catalog, beams=8, length_penalty=lp)
        s_old, r_old = old.search(prompts, 6, exclude=exclude)
        s_new, r_new = new.search(prompts, 6, exclude=exclude)
        assert (r_old >= 0).sum() >= 9  # 3 items per prompt or more: there is something to compare
        assert np.array_equal(r_old, r_new)
        np.testing.assert_allclose(s_new[r_new >= 0], s_old[r_old >= 0], atol=1e-4)


def test_small_branchings_are_fed_ahead_in_one_forward():
    """A late branching with few continuations (a year's digits) is fed ahead with the run that leads to it: the
    whole subtree (8 nodes) in the first forward after the prefill, none after, and the same hypotheses as
    transformers."""
    index = index_from_sequences(["a", "b", "c"], [[5, 6, 7, 8, 9], [5, 6, 7, 8, 10], [5, 6, 7, 11, 12]],
                                 vocab_size=V, end_token_id=EOS)
    ids, mask = random_prompts(np.random.default_rng(2), 3, V, pad=PAD, low=LOW)
    want = reference(index, ids, mask, 4, 6)
    (seqs, scores), shapes = forwards(lambda: constrained_beam_search(
        MODEL, ids, mask, TrieConstraint(index, eos_token_id=EOS), num_beams=4, max_new_tokens=6, pad_token_id=PAD))
    got = finished(seqs.numpy(), scores.numpy(), 3, 4)
    assert [set(g) for g in got] == [set(w) for w in want] == [{(5, 6, 7, 8, 9), (5, 6, 7, 8, 10), (5, 6, 7, 11, 12)}] * 3
    assert all(abs(w[k] - g[k]) < 1e-4 for w, g in zip(want, got) for k in w)
    assert shapes == [tuple(ids.shape), (3, 8)]
