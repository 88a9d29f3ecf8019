"""The demo page in headless Chromium (Debian's, driven by Playwright; nothing
downloads a browser): log in, cookie flags, cache hit on the second load, the
auth rate limit, and a live event from the other instance."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from .conftest import Instance

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is needed: apt-get install chromium"
    return path


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=_chromium(), args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def _feed_clients(instance: Instance) -> int:
    return int(instance.app.state.services.feed.clients)


async def _open(browser: Browser, instance: Instance) -> Page:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(15_000)
    await page.goto(instance.url + "/")
    await expect(page.locator("#redis")).to_contain_text("healthy")
    return page


async def test_the_page_end_to_end(
    instances: tuple[Instance, Instance], browser: Browser, tmp_path: Path
) -> None:
    a, b = instances
    page = await _open(browser, a)
    watcher = await _open(browser, b)
    for _ in range(200):  # the other page's live feed is connected
        if await _feed_clients(b) >= 1:
            break
        await asyncio.sleep(0.05)
    assert await _feed_clients(b) >= 1

    # Log in; the session cookie is HttpOnly, SameSite=Lax, signed.
    await page.fill("#username", "alice")
    await page.fill("#password", "wonderland")
    await page.click("#login")
    await expect(page.locator("#session-out")).to_contain_text('"username": "alice"')
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    assert session["path"] == "/"
    assert "." in session["value"]  # id.signature
    assert await page.evaluate("document.cookie") == ""  # invisible to scripts

    # Load a user twice: the second answer comes from the cache.
    await page.fill("#user-id", "2")
    await page.click("#load-user")
    await expect(page.locator("#x-cache")).to_have_text("MISS")
    await page.click("#load-user")
    await expect(page.locator("#x-cache")).to_have_text("HIT")
    await expect(page.locator("#limits")).to_contain_text("x-ratelimit-remaining")

    # A change made here shows up in the other instance's live feed.
    await page.fill("#new-name", "Bob the Builder")
    await page.click("#rename")
    await expect(page.locator("#user-out")).to_contain_text("Bob the Builder")
    await expect(watcher.locator("#feed li").first).to_contain_text("user.updated")
    await expect(watcher.locator("#feed li").first).to_contain_text("Bob the Builder")

    # Trip the auth limit (5 a minute per address): one login so far.
    await page.fill("#password", "wrong")
    statuses = []
    for _ in range(5):
        # One request at a time: the page shows whichever answer came last.
        async with page.expect_response("**/auth/login") as answer:
            await page.click("#login")
        statuses.append((await answer.value).status)
    assert statuses == [401, 401, 401, 401, 429]
    await expect(page.locator("#session-out")).to_contain_text("429")
    await expect(page.locator("#session-out")).to_contain_text("RATE_LIMITED")
    await expect(page.locator("#limits")).to_contain_text("retry-after")

    await page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
