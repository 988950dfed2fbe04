"""The OpenAPI document as the API behaves: problem details for every error, SSE for follow, strict JobCreate."""

from __future__ import annotations

from http import HTTPStatus

from litestar import Litestar
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, PathItem, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType

from service.api.errors import PROBLEM_JSON

PROBLEM_SCHEMA = Reference(ref="#/components/schemas/ProblemRead")
EVENT_STREAM = "text/event-stream"
FOLLOWED_OUTPUT_PATH = "/jobs/{job_id}/attempts/{attempt}/output"
STRICT_BODIES = ("JobCreate",)
INVALID_REQUEST = "A parameter or the body is invalid: the detail names it and its limit."
# One event of the followed output: `output` events carry text (their id is the byte offset reached), then one `end`.
SERVER_SENT_EVENT = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "event": Schema(type=OpenAPIType.STRING, enum=["output", "end"]),
        "data": Schema(type=OpenAPIType.STRING),
        "id": Schema(type=OpenAPIType.STRING, pattern=r"^[0-9]+$"),
    },
    required=["event", "data"],
)
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def _operations(path_item: PathItem) -> list[Operation]:
    return [operation for method in _METHODS if (operation := getattr(path_item, method, None)) is not None]


def _as_problems(operation: Operation) -> None:
    """Every error response is problem details (Litestar documents its 400 as its own JSON shape)."""
    responses = operation.responses if operation.responses is not None else {}
    if "400" not in responses and (operation.parameters or operation.request_body):
        responses["400"] = OpenAPIResponse(description=INVALID_REQUEST)
    for code, response in responses.items():
        if not (code.isdigit() and int(code) >= HTTPStatus.BAD_REQUEST and isinstance(response, OpenAPIResponse)):
            continue
        if code == "400" and PROBLEM_JSON not in (response.content or {}):
            response.description = INVALID_REQUEST  # Litestar's own words are about its own JSON shape
        response.content = {PROBLEM_JSON: OpenAPIMediaType(schema=PROBLEM_SCHEMA)}
    operation.responses = responses


def refine_openapi(app: Litestar) -> None:
    """Amend the document Litestar generated, once, before it is first served."""
    document = app.openapi_schema
    for path, path_item in (document.paths or {}).items():
        for operation in _operations(path_item):
            _as_problems(operation)
            if path == FOLLOWED_OUTPUT_PATH and operation.responses:
                success = operation.responses.get("200")
                if isinstance(success, OpenAPIResponse) and success.content is not None:
                    success.content[EVENT_STREAM] = OpenAPIMediaType(schema=SERVER_SENT_EVENT)
    schemas = document.components.schemas if document.components is not None else None
    for name in STRICT_BODIES:
        body_schema = (schemas or {}).get(name)
        if isinstance(body_schema, Schema):
            # msgspec refuses any other field (forbid_unknown_fields); the document says so.
            body_schema.additional_properties = False
