import json

import pytest
import torch

from lit_gpt.measurement.analysis import evaluate_gpt
from lit_gpt.measurement.probe_result import MEASURED, ProbeResult, ProbeResultError
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT


def measured():
    torch.manual_seed(0)
    return evaluate_gpt(GPT(Config.from_name("micro")).eval(), torch.randint(0, 128, (3, 16)))


def test_the_json_form_holds_the_measured_fields_first_then_what_was_measured_in_order():
    result = measured()
    result.about.update(variant="softmax", checkpoint="run/iter-000010-ckpt.pth")
    data = json.loads(json.dumps(result.to_json()))
    assert list(data) == [
        "eps",
        "n_sequences",
        "n_sink_tokens",
        "sink_rates",
        "layer_sink_rates",
        "layer_mean_alpha",
        "loss",
        "norms",
        "massive_activations",
        "variant",
        "checkpoint",
    ]
    assert data["n_sequences"] == 3 and data["variant"] == "softmax"


def test_reading_the_json_back_gives_the_same_result():
    result = measured()
    result.about["costs"] = {"w8a8": {"ratio": 1.01}}
    again = ProbeResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result
    assert again.about == {"costs": {"w8a8": {"ratio": 1.01}}}
    assert tuple(again.to_json())[: len(MEASURED)] == MEASURED


def test_a_stored_evaluation_without_a_measured_field_is_named():
    data = measured().to_json()
    del data["loss"], data["norms"]
    with pytest.raises(ProbeResultError, match="lacks loss, norms: evaluate the model again"):
        ProbeResult.from_json(data)
