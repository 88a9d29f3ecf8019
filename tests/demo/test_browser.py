"""The demo page in headless Chromium (Debian's, driven by Playwright; nothing
downloads a browser), with two instances: log in, cookie flags, the cache
badge through a write, the auth rate limit and logging out past it,
preferences kept in the session, orders with retries and a dead letter, the
report lock held by one instance, and live events from the other."""

from __future__ import annotations

import asyncio
import re
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


async def _open_both(browser: Browser, instances: tuple[Instance, Instance]) -> tuple[Page, Page]:
    """The page on each instance, once both pages' live feeds are connected."""
    pages = (await _open(browser, instances[0]), await _open(browser, instances[1]))
    for _ in range(200):
        if all([await _feed_clients(instance) >= 1 for instance in instances]):
            break
        await asyncio.sleep(0.05)
    assert all([await _feed_clients(instance) >= 1 for instance in instances])
    return pages


async def _sign_in(page: Page) -> None:
    await page.fill("#username", "alice")
    await page.fill("#password", "wonderland")
    await page.click("#login")


async def test_the_page_end_to_end(
    instances: tuple[Instance, Instance], browser: Browser, tmp_path: Path
) -> None:
    page, watcher = await _open_both(browser, instances)

    # Log in; the session cookie is HttpOnly, SameSite=Lax, signed.
    await _sign_in(page)
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

    # A write invalidates: the badge says so, and the next load is a miss.
    await page.fill("#new-name", "Bob the Builder")
    await page.click("#rename")
    await expect(page.locator("#user-out")).to_contain_text("Bob the Builder")
    await expect(page.locator("#x-cache")).to_have_text("INVALIDATED")
    await page.click("#load-user")
    await expect(page.locator("#x-cache")).to_have_text("MISS")
    await expect(page.locator("#user-out")).to_contain_text("Bob the Builder")

    # The change shows up in the other instance's live feed, readably.
    row = watcher.locator("#feed tr").first
    await expect(row.locator("td").nth(1)).to_have_text("user.updated")
    await expect(row.locator("td").nth(2)).to_have_text("a")
    await expect(row.locator("td").nth(3)).to_contain_text("name: Bob the Builder")
    await expect(row.locator("td").nth(0)).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))

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

    # Signing out is not under the login limit.
    async with page.expect_response("**/auth/logout") as answer:
        await page.click("#logout")
    assert (await answer.value).status == 200
    await expect(page.locator("#session-out")).to_contain_text('"logged_out": true')

    await page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)


async def test_preferences_orders_report_and_events(
    instances: tuple[Instance, Instance], browser: Browser, tmp_path: Path
) -> None:
    page, other = await _open_both(browser, instances)

    # Preferences: stored in the session before signing in, kept by login.
    await page.click("#theme-dark")
    await expect(page.locator("body")).to_have_class("dark")
    await expect(page.locator("#prefs-out")).to_contain_text('"theme": "dark"')
    await _sign_in(page)
    await expect(page.locator("#session-out")).to_contain_text('"username": "alice"')
    await page.reload()
    await expect(page.locator("body")).to_have_class("dark")
    await page.click("#show-prefs")
    await expect(page.locator("#prefs-out")).to_contain_text('"signed_in_as": "1"')
    await expect(page.locator("#prefs-out")).to_contain_text('"session": {\n    "theme": "dark"')

    # Orders: one fails twice and is then fulfilled, one ends as a dead letter.
    await expect(page.locator("#max-attempts")).to_have_text("3rd")
    await expect(page.locator("#retry-after")).to_have_text("1")
    await page.fill("#order-item", "ink")
    await page.select_option("#order-outcome", "2")
    await page.click("#place-order")
    await page.fill("#order-item", "paper")
    await page.select_option("#order-outcome", "10")
    await page.click("#place-order")
    ink = page.locator("#orders tbody tr", has_text="ink \N{MULTIPLICATION SIGN} 1")
    paper = page.locator("#orders tbody tr", has_text="paper \N{MULTIPLICATION SIGN} 1")
    await expect(ink.locator("td").nth(1)).to_have_text("processed")
    await expect(ink.locator("td").nth(2).locator("div")).to_have_count(3)
    await expect(ink.locator("td").nth(2)).to_contain_text("simulated failure 2 of 2")
    await expect(ink.locator("td").nth(3)).to_have_text(re.compile(r"^(a|b)$"))
    await expect(paper.locator("td").nth(1)).to_have_text("dead-lettered")
    await expect(paper.locator("td").nth(2)).to_contain_text("dead letter after 3 deliveries")
    # The other instance's page follows the same orders, from the events.
    other_paper = other.locator("#orders tbody tr", has_text="paper \N{MULTIPLICATION SIGN} 1")
    await expect(other_paper.locator("td").nth(1)).to_have_text("dead-lettered")
    await expect(other.locator("#feed tr", has_text="order.dead_lettered")).to_have_count(1)
    dead_row = other.locator("#feed tr", has_text="order.dead_lettered")
    await expect(dead_row.locator("td").nth(3)).to_contain_text("item: paper")
    await expect(dead_row.locator("td").nth(3)).to_contain_text("deliveries: 3")

    # The report job: held by one instance, its lease renewed while it runs.
    await page.fill("#seconds", "3")
    await page.click("#rebuild")
    await expect(page.locator("#report-out")).to_contain_text('"status": "started"')
    await expect(page.locator("#report-now")).to_contain_text("Running on a")
    await expect(other.locator("#report-now")).to_contain_text("Running on a")
    await other.click("#rebuild")
    await expect(other.locator("#report-out")).to_contain_text("409")
    await expect(other.locator("#report-out")).to_contain_text("already running on a")
    await expect(page.locator("#report-now")).to_contain_text(re.compile(r"renewed [1-9]\d* time"))
    await expect(page.locator("#report-now")).to_have_text("No rebuild running.")
    last = page.locator("#report-last")
    await expect(last).to_contain_text("Last rebuild: a")
    await expect(last).to_contain_text("3 s on a 2 s lease")
    await expect(last).to_contain_text("held throughout: yes")
    await expect(other.locator("#report-last")).to_contain_text("held throughout: yes")
    finished = other.locator("#feed tr", has_text="report.finished")
    await expect(finished.locator("td").nth(2)).to_have_text("a")
    await expect(finished.locator("td").nth(3)).to_contain_text("held_throughout: true")

    await page.screenshot(path=str(tmp_path / "panels.png"), full_page=True)
    await other.screenshot(path=str(tmp_path / "other.png"), full_page=True)
