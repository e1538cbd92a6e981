import pytest

from lit_gpt.data.errors import DataError
from lit_gpt.data.mixture import load_mixture


def test_upstream_format(tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text("train:\n  train_the_pile_arxiv: 0.1052\n  train_the_pile_pile_cc: 1\nvalid:\n  valid_the_pile_arxiv: 1.0\n")
    assert load_mixture(path) == ({"train_the_pile_arxiv": 0.1052, "train_the_pile_pile_cc": 1.0}, {"valid_the_pile_arxiv": 1.0})
    path.write_text("train: {train_a: 2}\n")
    assert load_mixture(path) == ({"train_a": 2.0}, {})


@pytest.mark.parametrize("content", ["valid: {a: 1}\n", "train: {a: -1}\n", "train: {a: yes}\n", "train: [a]\n", "train: {a: 1}\nvalid: [b]\n", "train: {"])
def test_bad_mixture_names_the_file(tmp_path, content):
    path = tmp_path / "mix.yaml"
    path.write_text(content)
    with pytest.raises(DataError, match="mix.yaml"):
        load_mixture(path)


def test_shipped_mixtures_parse():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].joinpath("configs", "data").glob("*.yaml")):
        train, valid = load_mixture(path)
        assert train and valid
