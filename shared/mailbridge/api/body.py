"""Request parsing at the edge: JSON bodies into pydantic models, with the field named on error."""
from __future__ import annotations

import json
from typing import TypeVar

from flask import request
from pydantic import BaseModel

from mailbridge.errors import InvalidRequestError

M = TypeVar("M", bound=BaseModel)


def json_object(*, allow_empty: bool = False) -> dict:
    """The body as a JSON object: 400 if it is not parsable JSON or not an object."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidRequestError("body: a JSON object is required", field="body", status=400)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("body: not valid JSON", field="body", status=400) from None
    if not isinstance(data, dict):
        raise InvalidRequestError("body: must be a JSON object", field="body", status=400)
    return data


def parse_body(model: type[M], *, allow_empty: bool = False) -> M:
    """Validate the JSON body against `model`; pydantic errors become 422 naming the field."""
    return model.model_validate(json_object(allow_empty=allow_empty))
