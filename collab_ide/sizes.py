"""How large a workspace's document may grow: a cap on the document and one on each file, checked
before an update is applied (``STUDYHALL_COLLAB_MAX_DOCUMENT_BYTES``, ``STUDYHALL_COLLAB_MAX_FILE_BYTES``).

An update that would pass a cap is refused whole: never applied, forwarded or stored (the connection
that sent it is closed with 4413). Sizes are bounded cheaply on the common path and measured exactly
only near a cap, so that a keystroke costs no more than it did:

- the **document**'s size is its encoded Yjs state: what is stored, loaded, and sent to every client
  that joins. It is measured whenever the document is written (compaction) and bounded in between by
  adding each update's length. When an update would pass the cap by that bound, the state is measured
  again, at most once per sixteenth of the cap of updates since the last measure (encoding the state
  costs time in proportion to its size), so near the cap an update may be refused up to that much early;
- a **file**'s size is its text in UTF-8 bytes. An update cannot add more to any file than its own
  length, so while the largest file (measured at each write) plus the update's length stays under the
  cap, nothing else is looked at. Otherwise the document is *watched*: a second copy of it, the shadow,
  takes each update first, and the files the update changed there are measured. An update that would
  take one past the cap is refused; the shadow, which took it, is built again from the document when
  next needed. The watch ends at a write that finds every file under half the cap.

An update that only deletes (it adds no item) always passes: that is how a full document gets smaller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc, Map, Text

from collab_ide.store import FILES

SCAN_FILES = 1000
"""Up to this many files, each write looks for the largest; with more, the watch does not end."""


@dataclass(frozen=True)
class SizeLimits:
    """Caps of one workspace's document (see the module docstring)."""

    document_bytes: int = 4 * 1024 * 1024
    file_bytes: int = 1024 * 1024


class TooLarge(ValueError):
    """An update that would make the document or one of its files larger than its cap (the message says which)."""


def adds_items(update: bytes) -> bool:
    """Whether a Yjs (v1) update adds anything: it starts with how many clients' new items it carries."""
    return update[:1] != b"\x00"


@dataclass(slots=True)
class SizeGuard:
    """The sizes of one loaded document, and the check of each update from a client against its caps.

    Args:
        doc: the document (the guard reads it, never changes it).
        limits: the caps.
        stored_bytes: what the document was loaded from (snapshot and log): a bound of its size.
    """

    doc: Doc[Any]
    limits: SizeLimits
    stored_bytes: int
    size: int = field(init=False)
    """A bound of the encoded state's size (exact when just measured)."""
    largest: int = field(init=False)
    """A bound of the largest file's size (a file's text is part of the state: never larger)."""
    watching: bool = field(default=False, init=False)
    _measured: int | None = field(default=None, init=False)
    _shadow: Doc[Any] | None = field(default=None, init=False, repr=False)
    _changed: set[str] = field(default_factory=set, init=False, repr=False)
    _watched: tuple[Any, ...] = field(default=(), init=False, repr=False)
    _document_cap: int = field(default=0, init=False, repr=False)
    _file_cap: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.size = self.largest = self.stored_bytes
        self._document_cap = self.limits.document_bytes
        self._file_cap = self.limits.file_bytes

    # --- updates from clients ----------------------------------------------------------------------

    def admit(self, update: bytes) -> None:
        """Check a client's update before it is applied: :class:`TooLarge` if it must be refused.

        Once admitted, the update must be applied to the document (the shadow, if any, has it already).
        """
        length = len(update)
        if length and update[0]:  # it adds items (see adds_items): the common path, kept short
            if self.size + length > self._document_cap:
                self._check_document(length)
            if self.watching or self.largest + length > self._file_cap:
                self._check_files(update)
            else:
                self.largest += length
        elif self._shadow is not None:
            self._shadow_apply(update)
        self.size += length

    def _check_document(self, length: int) -> None:
        cap = self.limits.document_bytes
        if self.size + length <= cap:
            return
        if self._measured is None or self.size - self._measured >= cap // 16:
            self.size = self._measured = len(self.doc.get_update())
            if self.size + length <= cap:
                return
        raise TooLarge(f"the workspace would be larger than its limit of {_amount(cap)}")

    def _check_files(self, update: bytes) -> None:
        self.watching = True
        if self._shadow is None:
            self._new_shadow()
        self._changed.clear()
        self._shadow_apply(update)
        files = self._watched[0]
        cap = self.limits.file_bytes
        for path in sorted(self._changed):
            value = files.get(path)
            if isinstance(value, Text) and len(value) > cap:
                self._drop_shadow()  # it has taken the update: built again from the document next time
                raise TooLarge(f"the file {path[:40]!r} would be larger than its limit of {_amount(cap)}")

    def _new_shadow(self) -> None:
        shadow: Doc[Any] = Doc()
        files = shadow.get(FILES, type=Map)
        shadow.apply_update(self.doc.get_update())
        # Held: the observer lives as long as its subscription and the map object it was made on.
        self._watched = (files, files.observe_deep(self._on_shadow_change))
        self._shadow = shadow

    def _drop_shadow(self) -> None:
        self._shadow = None
        self._watched = ()

    def _on_shadow_change(self, events: list[Any]) -> None:
        for event in events:
            path = event.path
            if path:
                self._changed.add(str(path[0]))
            else:  # the files map itself: files added, replaced or removed
                self._changed.update(str(key) for key in getattr(event, "keys", {}))

    def _shadow_apply(self, update: bytes) -> None:
        assert self._shadow is not None
        try:
            self._shadow.apply_update(update)
        except ValueError:
            self._drop_shadow()  # undecodable: the document will refuse it too
            raise

    # --- everything else ---------------------------------------------------------------------------

    def applied_elsewhere(self, update: bytes, *, counted: bool = False) -> None:
        """An update applied to the document without :meth:`admit` (another node's, or found in Postgres);
        ``counted``: the sizes include it already (it was in the state :meth:`written` was told of)."""
        if not counted:
            self.size += len(update)
            self.largest += len(update)
        if self._shadow is not None:
            try:
                self._shadow.apply_update(update)
            except ValueError:
                self._drop_shadow()

    def written(self, state_bytes: int) -> None:
        """The document was just encoded to be written (``state_bytes`` long): its sizes are exact now."""
        self.size = self._measured = state_bytes
        files = self.doc.get(FILES, type=Map)
        if len(files) > SCAN_FILES:
            return
        with self.doc.transaction():
            self.largest = max((len(value) for value in files.values() if isinstance(value, Text)), default=0)
        if self.largest <= self.limits.file_bytes // 2:
            self.watching = False
            self._drop_shadow()


def _amount(size: int) -> str:
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    if size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} bytes"
