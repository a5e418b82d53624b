"""The REST edge: a route table of typed endpoints that validates, authorizes and documents itself.

Each endpoint declares its body, query and response models (pydantic). The same models validate
requests, serialise responses and produce the OpenAPI document, so the document cannot drift from the
code. Handlers receive a :class:`Call` with everything already parsed and return a model (or
:class:`Reply` to pick the status), never touching aiohttp's request directly.
"""

from __future__ import annotations

import re
import typing
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import models_json_schema

from core_api.errors import AppError, ErrorCode, invalid

PREFIX = "/api/v1"
_PATH_PARAM = re.compile(r"{([a-z_]+)}")
# Path parameters that are free-form strings; every other one is an opaque UUID.
_STRING_PARAMS = {"code"}
CLIENT_ADDR = web.RequestKey("client_addr", str)


class Input(BaseModel):
    """Base for request bodies: unknown fields are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Base for query strings (values arrive as text, so numbers are parsed)."""

    model_config = ConfigDict(extra="ignore")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorEnvelope(BaseModel):
    error: ErrorBody


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    id: uuid.UUID
    role: str
    email: str
    display_name: str
    session_id: uuid.UUID | None = None  # the sign-in the access token belongs to (``sessions``), if it names one

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass
class Call:
    """One parsed request as a handler sees it."""

    request: web.Request
    user: Principal | None
    params: dict[str, Any]
    body: Any
    query: Any

    @property
    def me(self) -> Principal:
        """The caller; endpoints declared with ``auth=True`` always have one."""
        assert self.user is not None
        return self.user

    @property
    def remote(self) -> str:
        return self.request.get(CLIENT_ADDR) or self.request.remote or "unknown"


@dataclass
class Reply:
    """A response with an explicit status (and optional model)."""

    model: BaseModel | None
    status: int = 200


@dataclass
class Download:
    """A file to hand over as it is (the endpoint declares its media type with ``produces``)."""

    body: bytes
    content_type: str
    filename: str


Handler = Callable[[Call], Awaitable[BaseModel | Reply | Download | web.StreamResponse | None]]
Authenticator = Callable[[web.Request], Awaitable[Principal]]


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    description: str | None = None  # longer prose for the OpenAPI document (rules, side effects)
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: bool = True
    roles: frozenset[str] = frozenset()
    errors: Sequence[int] = ()
    extra_statuses: dict[int, str] = field(default_factory=dict)
    produces: str | None = None  # a binary media type: the handler returns a Download or a StreamResponse

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


class Api:
    """A table of endpoints under ``/api/v1`` (one per module, like aiohttp's ``RouteTableDef``).

    ``Api.combine`` joins the modules' tables; the result mounts on an app and describes itself in OpenAPI.
    """

    def __init__(self, endpoints: Sequence[Endpoint] = ()) -> None:
        self.endpoints: list[Endpoint] = list(endpoints)

    @classmethod
    def combine(cls, *tables: Api) -> Api:
        return cls([ep for table in tables for ep in table.endpoints])

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        description: str | None = None,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        auth: bool = True,
        roles: Sequence[str] = (),
        errors: Sequence[int] = (),
        extra_statuses: dict[int, str] | None = None,
        produces: str | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(
                    method=method.upper(),
                    path=path,
                    handler=handler,
                    summary=summary,
                    tag=tag,
                    description=description,
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    auth=auth,
                    roles=frozenset(roles),
                    errors=errors,
                    extra_statuses=extra_statuses or {},
                    produces=produces,
                )
            )
            return handler

        return register

    def mount(self, app: web.Application, authenticate: Authenticator) -> None:
        for ep in self.endpoints:
            app.router.add_route(ep.method, PREFIX + ep.path, _make_view(ep, authenticate), name=ep.operation_id)

    def openapi(self, title: str, version: str) -> dict[str, Any]:
        return build_openapi(self, title, version)


def _parse_params(ep: Endpoint, match_info: dict[str, str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in ep.path_params:
        raw = match_info[name]
        if name in _STRING_PARAMS:
            if "\x00" in raw or len(raw) > 200:
                raise AppError(ErrorCode.NOT_FOUND, f"{name} not found")
            params[name] = raw
            continue
        try:
            params[name] = uuid.UUID(raw)
        except ValueError:
            # An id that cannot exist names nothing: same answer as an unknown one.
            raise AppError(ErrorCode.NOT_FOUND, f"{name.removesuffix('_id')} not found") from None
    return params


def _query_values(model: type[BaseModel], request: web.Request) -> dict[str, Any]:
    """The query string as the model takes it: a list field gets every value of a repeated key
    (``?tag=a&tag=b``), any other field the first."""
    values: dict[str, Any] = {}
    for name in request.query:
        if name in values:
            continue
        field = model.model_fields.get(name)
        many = field is not None and typing.get_origin(field.annotation) is list
        values[name] = request.query.getall(name) if many else request.query[name]
    return values


def _validation_details(exc: ValidationError) -> dict[str, Any]:
    return {
        "fields": [
            {"loc": ".".join(str(p) for p in err["loc"]) or "(body)", "msg": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
    }


async def _read_body(ep: Endpoint, request: web.Request) -> Any:
    assert ep.body is not None
    if not request.can_read_body:
        raw = b""
    else:
        raw = await request.read()  # over the size limit this raises; the middleware answers 413
    if not raw.strip():
        raise invalid("a JSON body is required")
    if b"\\u0000" in raw:
        # JSON can carry NUL characters but Postgres text cannot; refuse them here, for every body.
        raise invalid("text must not contain NUL (\\u0000) characters")
    try:
        return ep.body.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise invalid("request body is not valid JSON") from None
        raise AppError(ErrorCode.INVALID_INPUT, "request body is invalid", _validation_details(exc)) from None


def _make_view(ep: Endpoint, authenticate: Authenticator) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def view(request: web.Request) -> web.StreamResponse:
        params = _parse_params(ep, dict(request.match_info))
        user = await authenticate(request) if ep.auth else None
        if ep.roles and (user is None or user.role not in ep.roles):
            raise AppError(ErrorCode.FORBIDDEN, f"requires role {' or '.join(sorted(ep.roles))}")
        query = None
        if ep.query is not None:
            try:
                query = ep.query.model_validate(_query_values(ep.query, request))
            except ValidationError as exc:
                raise AppError(ErrorCode.INVALID_INPUT, "query is invalid", _validation_details(exc)) from None
        body = await _read_body(ep, request) if ep.body is not None else None
        result = await ep.handler(Call(request=request, user=user, params=params, body=body, query=query))
        status = ep.status
        if isinstance(result, web.StreamResponse):  # a file the handler answered itself (media storage's send)
            return result
        if isinstance(result, Download):
            disposition = f'attachment; filename="{result.filename}"'
            return web.Response(
                status=status, body=result.body, content_type=result.content_type,
                headers={"Content-Disposition": disposition},
            )  # fmt: skip
        if isinstance(result, Reply):
            status, result = result.status, result.model
        if result is None:
            return web.Response(status=204 if status == 200 else status)
        return web.Response(status=status, body=result.model_dump_json().encode(), content_type="application/json")

    view.__name__ = ep.operation_id
    return view


# --- OpenAPI -----------------------------------------------------------------------------------------

_ERROR_TEXT = {
    400: "Invalid input (`invalid_input`)",
    401: "Missing, expired or invalid credentials (`unauthorized`)",
    403: "Not allowed (`forbidden`)",
    404: "Not found (`not_found`)",
    409: "Conflicts with current state (`conflict`)",
    413: "Body too large (`payload_too_large`)",
    429: "Too many requests (`rate_limited`)",
    503: "Temporarily unable to serve; retry after `Retry-After` seconds (`unavailable`)",
}


def build_openapi(api: Api, title: str, version: str) -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorEnvelope}
    for ep in api.endpoints:
        for model in (ep.body, ep.response):
            if model is not None:
                models.add(model)
    ordered = sorted(models, key=lambda m: m.__name__)
    modes = [(m, "validation") for m in ordered] + [(m, "serialization") for m in ordered]
    keys, defs = models_json_schema(modes, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    schemas = defs.get("$defs", {})

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return dict(keys[(model, mode)])  # type: ignore[index]

    paths: dict[str, dict[str, Any]] = {}
    for ep in api.endpoints:
        op: dict[str, Any] = {"operationId": ep.operation_id, "summary": ep.summary, "tags": [ep.tag]}
        if ep.description:
            op["description"] = ep.description
        parameters: list[dict[str, Any]] = []
        for name in ep.path_params:
            schema = {"type": "string"} if name in _STRING_PARAMS else {"type": "string", "format": "uuid"}
            parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
        if ep.query is not None:
            qschema = ep.query.model_json_schema()
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                prop = dict(prop)
                prop.pop("title", None)
                parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        if parameters:
            op["parameters"] = parameters
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(ep.body, "validation")}},
            }
        responses: dict[str, Any] = {}
        if ep.produces is not None:
            responses[str(ep.status)] = {
                "description": "Success",
                "content": {ep.produces: {"schema": {"type": "string", "format": "binary"}}},
            }
        elif ep.response is not None:
            responses[str(ep.status)] = {
                "description": "Success",
                "content": {"application/json": {"schema": ref(ep.response, "serialization")}},
            }
        else:
            responses[str(ep.status if ep.status != 200 else 204)] = {"description": "Done, no content"}
        for status, text in ep.extra_statuses.items():
            entry: dict[str, Any] = {"description": text}
            if ep.response is not None:
                entry["content"] = {"application/json": {"schema": ref(ep.response, "serialization")}}
            responses[str(status)] = entry
        statuses = {400, *ep.errors}
        if ep.body is not None:
            statuses.add(413)
        if ep.auth:
            statuses.add(401)
        if ep.roles:
            statuses.add(403)
        if ep.path_params:
            statuses.add(404)
        error_ref = {"$ref": "#/components/schemas/ErrorEnvelope"}
        for status in sorted(statuses):
            responses[str(status)] = {
                "description": _ERROR_TEXT[status],
                "content": {"application/json": {"schema": error_ref}},
            }
        op["responses"] = responses
        if ep.auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(PREFIX + ep.path, {})[ep.method.lower()] = op

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
