import pytest
import torch
from conftest import TINY_FAC
from transformers import AutoConfig, DynamicCache

from transformers_fac.growing_cache import GrowingCache


def _states(length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, length, 4, generator=generator) for _ in range(2))


def _assert_same(growing: GrowingCache, dynamic: DynamicCache) -> None:
    for ours, reference in zip(growing.layers, dynamic.layers):
        assert torch.equal(ours.keys, reference.keys) and torch.equal(ours.values, reference.values)
    assert growing.get_seq_length() == dynamic.get_seq_length()


def test_growing_cache_holds_what_a_dynamic_cache_holds():
    config = AutoConfig.from_pretrained(TINY_FAC).text_config
    growing, dynamic = GrowingCache(config=config), DynamicCache(config=config)
    lengths = [50, 1, 1, 30, 1, 100]
    for step, length in enumerate(lengths):
        for layer in range(config.num_hidden_layers):
            keys, values = _states(length, seed=10 * step + layer)
            returned = growing.update(keys, values, layer)
            expected = dynamic.update(keys, values, layer)
            assert all(torch.equal(a, b) for a, b in zip(returned, expected))
        _assert_same(growing, dynamic)
    assert growing.layers[0]._key_buffer.shape[-2] < 2 * sum(lengths)


@pytest.mark.parametrize("edit", ["crop", "select", "inference"])
def test_growing_cache_survives_edits_of_its_history(edit):
    config = AutoConfig.from_pretrained(TINY_FAC).text_config
    growing, dynamic = GrowingCache(config=config), DynamicCache(config=config)
    for cache in (growing, dynamic):
        with torch.inference_mode(edit == "inference"):
            for layer in range(config.num_hidden_layers):
                cache.update(*_states(20, seed=layer), layer)
        if edit == "crop":
            cache.crop(-5)
        elif edit == "select":
            cache.batch_select_indices(torch.tensor([1]))
    for layer in range(config.num_hidden_layers):
        keys, values = _states(3, seed=100 + layer)
        if edit == "select":
            keys, values = keys[:1], values[:1]
        growing.update(keys, values, layer)
        dynamic.update(keys, values, layer)
    _assert_same(growing, dynamic)
