"""Typed messages of the workspaces API, validated at the edge with limits.

File paths are relative POSIX paths made of ``[A-Za-z0-9._-]`` segments (no ``..``, no leading ``/``),
so an archive built from them extracts safely anywhere and a sandbox can write them as they are.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, model_validator

from collab_ide.templates import Language
from core_api.context import PageQuery
from core_api.http import Input

Access = Literal["edit", "read"]
MAX_FILES = 100
MAX_PATH = 200
MAX_FILE_CHARS = 256 * 1024
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def check_path(path: str) -> str:
    """A safe relative file path, or ``ValueError`` saying what is wrong with it."""
    if not path or len(path) > MAX_PATH:
        raise ValueError(f"a file path has 1 to {MAX_PATH} characters")
    segments = path.split("/")
    if len(segments) > 8 or not all(_SEGMENT.match(s) for s in segments):
        raise ValueError("a file path is up to 8 '/'-separated names of letters, digits, '.', '_' and '-'")
    return path


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable (no control characters)")
    return value


FilePath = Annotated[str, AfterValidator(check_path)]
WorkspaceName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120), AfterValidator(_printable)
]


class WorkspaceIn(Input):
    name: WorkspaceName
    language: Language = Field(
        description="The template: its starter files and entry file (`GET /workspaces/templates`)."
    )
    room_id: uuid.UUID | None = Field(
        None, description="Open it in this room (you must be a member); null for a workspace of your own."
    )
    room_access: Access = Field("edit", description="What the room's members may do (its host and moderators edit).")
    files: dict[FilePath, Annotated[str, Field(max_length=MAX_FILE_CHARS)]] | None = Field(
        None, max_length=MAX_FILES, description="Starter files instead of the template's (path → content)."
    )
    entry: FilePath | None = Field(None, description="The file a run starts from; default: the template's.")

    @model_validator(mode="after")
    def _entry_is_a_file(self) -> WorkspaceIn:
        if self.files is not None and self.entry is not None and self.entry not in self.files:
            raise ValueError("entry must be one of the files")
        return self


class WorkspaceOut(BaseModel):
    id: uuid.UUID
    name: str
    language: Language
    entry: str
    room_id: uuid.UUID | None
    room_access: Access
    created_by: uuid.UUID
    created_at: datetime
    my_access: Access = Field(description="`edit`: your updates are accepted; `read`: you get the document only.")
    can_manage: bool = Field(description="Whether you may change who has access.")
    editor_path: str = Field(description="Join the document at `ws(s)://HOST{editor_path}?token=<access_token>`.")


class WorkspaceListQuery(PageQuery):
    room_id: uuid.UUID | None = Field(None, description="Only the workspaces of this room.")


class MemberAccessIn(Input):
    access: Access


class WorkspaceMemberOut(BaseModel):
    user_id: uuid.UUID
    display_name: str
    access: Access
    added_at: datetime


class FileOut(BaseModel):
    path: str
    size: int = Field(description="Length of the content in UTF-8 bytes.")


class FileListOut(BaseModel):
    items: list[FileOut] = Field(description="The document's files now, by path.")


class TemplateOut(BaseModel):
    language: Language
    entry: str
    files: dict[str, str]


class TemplateListOut(BaseModel):
    items: list[TemplateOut]
