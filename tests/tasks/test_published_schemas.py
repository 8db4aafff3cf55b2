from __future__ import annotations

import json

from tasks.published_schemas import published_schemas, render_schema


def test_committed_json_schemas_are_current() -> None:
    # given the committed schema files
    for path, model in published_schemas().items():
        # when each is regenerated from its pydantic record
        fresh = render_schema(model)
        # then the committed text is identical (run `scoregate schemas` after changing a record)
        assert path.read_text(encoding="utf-8") == fresh, f"{path.name} is out of date: run `scoregate schemas`"


def test_training_config_schema_forbids_unknown_keys() -> None:
    path = next(p for p in published_schemas() if p.name == "training_config.schema.json")
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert schema["additionalProperties"] is False
    assert {"target", "spec"} <= set(schema["required"])
