"""Where a store's sessions live: the keys of a session id, of a user's
index, and the ids of new sessions, in either key layout.

``"redkit"`` (tagged): ``{head}{tag}:{secret}`` holds a session whose id is
``{tag}.{secret}``, and ``{head}{tag}:user`` indexes the sessions of the
user the tag stands for, in the same cluster slot. ``"go"``: the Go
service's ``{head}{id}`` and ``{head}user:{user id}``.
"""

from __future__ import annotations

from . import _ids


class Layout:
    """The key layout of one store. ``head`` is ``{prefix}:session:`` (or
    ``session:``); ``tags`` makes the user tags of the tagged layout."""

    __slots__ = ("counts", "head", "tagged", "tags")

    def __init__(
        self, head: str, *, tagged: bool, tags: _ids.UserTags, counts: dict[str, int]
    ) -> None:
        self.head = head
        self.tagged = tagged
        self.tags = tags
        # The store's counters: keys() counts the ids it refuses
        # (malformed_ids) itself, so that the store's operations call it
        # directly.
        self.counts = counts

    def keys(self, session_id: object) -> list[str] | None:
        """Record key (and, tagged layout, index key) for a well-formed id;
        None for anything else, which is then never sent to Redis."""
        if not isinstance(session_id, str) or len(session_id) > _ids.MAX_ID_LENGTH:
            self.counts["malformed_ids"] += 1
            return None
        if self.tagged:
            tag = _ids.tag_of(session_id)
            if tag is None:
                self.counts["malformed_ids"] += 1
                return None
            return [
                f"{self.head}{{{tag}}}:{session_id[_ids.TAG_CHARS + 1 :]}",
                f"{self.head}{{{tag}}}:user",
            ]
        if not _ids.is_go_id(session_id):
            self.counts["malformed_ids"] += 1
            return None
        return [self.head + session_id]

    def index_keys(self, user_id: str) -> list[tuple[str, str]]:
        """(index key, tag or "") of every place a user's sessions may be
        indexed: one per store secret in the tagged layout, current first."""
        if self.tagged:
            return [(f"{self.head}{{{tag}}}:user", tag) for tag in self.tags.every(user_id)]
        return [(f"{self.head}user:{user_id}", "")]

    def new_id(self, user_id: str) -> tuple[str, list[str], str]:
        """(id, keys, tag) for a new session of ``user_id``."""
        secret = _ids.new_secret()
        if self.tagged:
            return self._tagged_id(self.tags.current(user_id), secret)
        return secret, [self.head + secret], ""

    def next_id(self, session_id: str, user_id: str | None) -> tuple[str, list[str], str]:
        """(id, keys, tag) for session ``session_id`` rotated to a new id:
        of the same user, in the tagged layout the same tag (so the same
        slot and index); of ``user_id`` when given."""
        if self.tagged and user_id is None:
            return self._tagged_id(_ids.tag_of(session_id) or "", _ids.new_secret())
        return self.new_id(user_id or "")

    def _tagged_id(self, tag: str, secret: str) -> tuple[str, list[str], str]:
        return (
            f"{tag}.{secret}",
            [f"{self.head}{{{tag}}}:{secret}", f"{self.head}{{{tag}}}:user"],
            tag,
        )
