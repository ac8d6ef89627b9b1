import pytest

from pipeline.errors import UsageError
from pipeline.spec.archs import ARCHS, expand, get_arch
from pipeline.training.model import build_model, init_model


def test_parameter_counts_match_the_tutorials_models():
    assert ARCHS["shallow"].n_params == 9
    assert ARCHS["wide-deep"].n_params == 261
    for arch in ARCHS.values():
        assert sum(p.numel() for p in build_model(arch).parameters()) == arch.n_params


def test_layer_structure():
    import torch

    m = build_model(ARCHS["wide-deep"])
    kinds = [type(layer).__name__ for layer in m]
    assert kinds == ["Linear", "Sigmoid"] * 4
    assert [layer.out_features for layer in m if isinstance(layer, torch.nn.Linear)] == [10, 10, 10, 1]


def test_all_expands_in_order_and_unknown_names_are_refused():
    assert [a.name for a in expand("all")] == ["shallow", "wide-deep"]
    with pytest.raises(UsageError, match="shallow, wide-deep"):
        get_arch("resnet")


def test_tutorial_order_changes_wide_deep_initialisation_only():
    import torch

    a = init_model(ARCHS["shallow"], 777)
    b = init_model(ARCHS["shallow"], 777, tutorial_order=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = init_model(ARCHS["wide-deep"], 777)
    d = init_model(ARCHS["wide-deep"], 777, tutorial_order=False)
    assert not torch.equal(next(c.parameters()), next(d.parameters()))
