import pytest

from fusegraph.nn import QuantizationConfig


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("bits", 5, r"\[2, 3, 4, 8\]"),
        ("checkpoint_format", "awq", r"\['gptq', 'gptq_v2'\]"),
        ("quant_method", "awq", r"\['gptq'\]"),
        ("group_size", 0, "-1 or a positive int"),
        ("sym", "yes", "True or False"),
    ],
)
def test_config__bad_value_names_field_and_allowed(field, value, allowed):
    with pytest.raises(ValueError, match=rf"{field}.*{allowed}"):
        QuantizationConfig(**{field: value})


def test_config__from_dict_reads_gptqmodel_format_key_and_ignores_extras():
    cfg = QuantizationConfig.from_dict(
        {"bits": 8, "group_size": -1, "format": "gptq_v2", "damp_percent": 0.1}
    )
    assert (cfg.bits, cfg.group_size, cfg.zero_format) == (8, -1, "v2")
    assert cfg.num_groups(64) == 1


def test_config__from_dict_requires_bits():
    with pytest.raises(ValueError, match="missing required field.*bits"):
        QuantizationConfig.from_dict({"group_size": 32})
