"""The catalogue names every dataset, family, codec and profile the library uses, once."""

from __future__ import annotations

import pytest

from ood_lib import catalogue, compress
from ood_lib.analysis import decomposition
from ood_lib.training import profiles
from ood_lib.zoo import families


def test_every_name_the_library_uses_is_in_the_catalogue() -> None:
    assert set(catalogue.DISPLAY_NAMES) == set(catalogue.DATASETS) == set(catalogue.IMAGE_SHAPES)
    assert set(families.MODELS) == set(catalogue.FAMILY_NAMES)
    assert set(compress.CODECS) == set(catalogue.CODEC_NAMES)
    assert set(catalogue.PROFILES) == set(profiles._TRAIN)
    assert {d for d, _ in catalogue.OFFICIAL_SIZES} == set(catalogue.DATASETS)
    for train, ood in catalogue.PAIRS.items():
        assert {train, ood} <= set(catalogue.DATASETS)


def test_geometry_and_kind() -> None:
    assert catalogue.geometry("cifar10") == (3, 32)
    assert catalogue.geometry("mnist") == (1, 28)
    assert [catalogue.image_kind(d) for d in ("svhn", "notmnist")] == ["rgb", "grey"]


def test_unknown_names_fail_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown profile 'gpu'.*smoke"):
        catalogue.check("gpu", "cifar10")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*cifar10"):
        catalogue.check("cpu", "imagenet")


def test_the_terms_that_favour_the_ood_set_are_those_with_a_positive_gap() -> None:
    gaps = {"log p(z)": -120.5, "log |det|": 310.0, "log p(x)": 0.0}
    assert decomposition.favouring(gaps) == ["log |det|"]
    assert decomposition.favouring({"a": 1e-9, "b": 2.0}) == ["a", "b"]
    assert decomposition.favouring({}) == []
