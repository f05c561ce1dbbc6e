"""JSON Schema export of every event type."""

from __future__ import annotations

from pathlib import Path

import orjson

from outloop.schemas.events import EVENT_TYPES, DeadLetter, Envelope


def json_schemas() -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {"envelope": Envelope.model_json_schema(),
                                         "dead_letter": DeadLetter.model_json_schema()}
    for kind, model in EVENT_TYPES.items():
        out[kind.value] = model.model_json_schema()
    return out


def export_json_schemas(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in json_schemas().items():
        path = dest / f"{name}.schema.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        paths.append(path)
    return paths
