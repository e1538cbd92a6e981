import matplotlib.image as mpimg
import pytest
import torch

from lit_gpt.measurement.analysis import evaluate_gpt
from lit_gpt.measurement.plots import norms_by_position, write_plots
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT


@pytest.mark.parametrize("overrides", [{}, dict(k_bias=True, v_bias=True, sink_tokens=2)])
def test_every_figure_is_a_readable_png(tmp_path, overrides):
    torch.manual_seed(0)
    model = GPT(Config.from_name("micro", **overrides)).eval()
    tokens = torch.randint(0, 128, (3, 16))
    result = evaluate_gpt(model, tokens)
    with torch.no_grad():
        _, maps = model(tokens[:1], return_attention=True)
    paths = write_plots(result, maps, tmp_path / "plots", layers=[0, 1], heads=[0, 3], n_slots=model.config.n_slots)
    assert sorted(p.name for p in paths) == sorted(p.name for p in (tmp_path / "plots").iterdir())
    for path in paths:
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 0  # something was drawn


def test_the_norms_figure_draws_without_the_norms_a_model_cannot_give(tmp_path):
    torch.manual_seed(0)
    result = evaluate_gpt(GPT(Config.from_name("micro")).eval(), torch.randint(0, 128, (2, 16)))
    result.norms.update(keys=None, values=None)
    image = mpimg.imread(norms_by_position(result, tmp_path / "norms.png"))
    assert image.shape[0] > 100 and image.std() > 0
