from __future__ import annotations

from pathlib import Path

import pytest

from redkit.demo.passwords import hash_password, verify_password
from redkit.demo.repository import DuplicateUsername, UserRepository


def test_passwords_are_salted_and_verified() -> None:
    first, second = hash_password("wonderland"), hash_password("wonderland")
    assert first != second
    assert first.startswith("scrypt$")
    assert verify_password("wonderland", first)
    assert not verify_password("Wonderland", first)
    assert not verify_password("wonderland", "garbage")
    assert not verify_password("wonderland", "md5$1$2$3$4$5")


async def test_repository_seeds_and_crud(tmp_path: Path) -> None:
    repo = UserRepository(tmp_path / "demo.db")
    await repo.init()
    await repo.init()  # a second start does not seed twice
    users = await repo.page(1, 10)
    assert [u.username for u in users] == ["alice", "bob"]
    creds = await repo.credentials("alice")
    assert creds is not None
    assert verify_password("wonderland", creds[1])
    carol = await repo.create("carol", "Carol", "carol@example.com", "pw")
    assert carol.id == 3
    with pytest.raises(DuplicateUsername):
        await repo.create("carol", "Other", "x@example.com", "pw")
    renamed = await repo.update(carol.id, "Caroline", None)
    assert renamed is not None
    assert (renamed.name, renamed.email) == ("Caroline", "carol@example.com")
    assert await repo.delete(carol.id)
    assert not await repo.delete(carol.id)
    assert await repo.get(carol.id) is None
    assert [u.id for u in await repo.page(2, 1)] == [2]
