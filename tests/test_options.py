"""SearchOptions: one set of validators for the form, the API and the CLI (fast: no model)."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import MultiDict

from indexer.config import Settings
from indexer.options import BadQuery, SearchOptions, check_crop, check_k, from_arguments, from_fields

FACETS = {"gender": ["Men", "Women"], "articleType": ["Tshirts", "Jeans"]}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.from_env({}, catalogue=str(tmp_path), index_dir=str(tmp_path / "index"))


def test_fields_become_one_options_value(settings):
    fields = MultiDict([("k", "7"), ("gender", "Men"), ("colour_weight", "0.4"), ("locate", "false"),
                        ("crop", "0.1,0.2,0.5,0.5"), ("crop", "")])
    options = from_fields(fields, settings, FACETS)
    assert options == SearchOptions(k=7, filters={"gender": "Men"}, colour_weight=0.4, locate=False,
                                    crops=((0.1, 0.2, 0.5, 0.5), None))
    assert options.crop_for(1) is None and options.crop_for(5) is None
    assert from_fields(MultiDict(), settings, FACETS) == SearchOptions.defaults(settings)


@pytest.mark.parametrize("field", ["k", "colour_weight", "locate", "gender"])
def test_a_repeated_single_value_field_is_refused_by_name(settings, field):
    value = {"k": "5", "colour_weight": "0.2", "locate": "true", "gender": "Men"}[field]
    with pytest.raises(BadQuery) as caught:
        from_fields(MultiDict([(field, value), (field, value)]), settings, FACETS)
    assert caught.value.field == field and "sent 2 times" in caught.value.message


@pytest.mark.parametrize("text", ["-0", "0_5", "\u0660\u066b\u0665", "1e-1", "+1", " .", "0.5.1", "nan", "inf", "½"])
def test_numbers_are_ascii_digits_and_one_point(text):
    with pytest.raises(BadQuery):
        check_crop(f"{text},0,0.5,0.5", 1)
    with pytest.raises(BadQuery):
        check_k(text, 5, 50)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"k": "0"}, "k"), ({"k": "-1"}, "k"), ({"colour_weight": "1.5"}, "colour_weight"),
     ({"crop": "0.6,0,0.5,1"}, "crop")],
)
def test_the_cli_and_the_form_refuse_the_same_value_with_the_same_message(settings, kwargs, field):
    with pytest.raises(BadQuery) as cli:
        from_arguments(settings, **kwargs)
    with pytest.raises(BadQuery) as form:
        from_fields(MultiDict(list(kwargs.items())), settings, FACETS)
    assert cli.value.field == form.value.field == field
    assert cli.value.message == form.value.message
