import numpy as np
import pytest

from dlsearch.data.catalog import Item
from dlsearch.data.encoder import encode_texts, item_text, load_encoder

TITLES = ["Toy Story (1995)", "Heat (1995)", "Jumanji (1995)", "Toy Story 2 (1999)"]


class CountingEncoder:
    """Wraps the real encoder and counts the texts it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.calls, self.texts = inner, 0, []
        self.dlsearch_fingerprint = inner.dlsearch_fingerprint

    def encode(self, texts, **kw):
        self.calls += 1
        self.texts.extend(texts)
        return self.inner.encode(texts, **kw)

    def get_embedding_dimension(self):
        return self.inner.get_embedding_dimension()


@pytest.fixture(scope="module")
def encoder():
    return load_encoder()


def test_real_titles_normalised_and_similar(encoder):
    v = encode_texts(TITLES, encoder=encoder)
    assert v.shape == (4, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # the two Toy Story titles are closer to each other than to Heat
    assert v[0] @ v[3] > v[0] @ v[1]


def test_cache_hit_does_not_call_model(encoder, tmp_path):
    enc = CountingEncoder(encoder)
    first = encode_texts(TITLES[:3], encoder=enc, cache_dir=tmp_path)
    assert enc.calls == 1 and len(enc.texts) == 3
    again = encode_texts(TITLES[:3], encoder=enc, cache_dir=tmp_path)
    assert enc.calls == 1  # all hits
    np.testing.assert_array_equal(first, again)
    mixed = encode_texts(TITLES + TITLES[:1], encoder=enc, cache_dir=tmp_path)
    assert enc.calls == 2 and enc.texts[3:] == [TITLES[3]]  # only the new text is embedded
    np.testing.assert_array_equal(mixed[:3], first)
    assert not list(tmp_path.rglob("*.pkl")) and list(tmp_path.rglob("*.safetensors"))


def test_item_text_and_type_checks(encoder):
    it = Item("1", "Toy Story (1995)", text="A toy cowboy.", concepts=("Animation", "Comedy"))
    assert item_text(it) == "Toy Story (1995). Concepts: Animation, Comedy. A toy cowboy."
    assert item_text(Item("2", "Heat (1995)")) == "Heat (1995)"
    with pytest.raises(TypeError):
        encode_texts("one string", encoder=encoder)
    assert encode_texts([], encoder=encoder).shape == (0, 384)
