"""The console in a real browser: Debian's chromium (/usr/bin/chromium, headless) driven by
Playwright, no browser download. A technician logs in, watches the outbox figure rise during a
WAN outage and fall after it, test-prints on the (emulated) receipt printer and sees the
receipt's preview, and retries a parked sale. Screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from edge.sim import HqApiSimulator
from edge.sim.printer import PrinterEmulator
from tests.conftest import MosquittoProcess, lane_client
from tests.outbox.test_outbox_hub import SUBMIT, hub_with_cloud, sale
from tests.test_console_pages import PASSWORD, TECHNICIAN, add_technician

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
# The flags a root, offline, GPU-less machine needs (env: machines/python.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (make test installs it)",
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_a_technician_watches_an_outage_test_prints_and_retries_a_parked_sale(
    tmp_path: Path, broker: MosquittoProcess, browser: Browser
) -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    bad = sale(99)
    sim = HqApiSimulator(reject_ids={bad["txn_id"]})
    async with PrinterEmulator() as printer:
        printers = [{"name": "front", "host": "127.0.0.1", "port": printer.port}]
        async with (
            hub_with_cloud(
                tmp_path, broker, sim, devices__printers=printers, devices__status_every_s=0.2
            ) as (hub, hq, wan),
            lane_client(broker.port) as lane,
        ):
            add_technician(hub)
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(WAIT_MS)

            # Log in: the console sends us to the login form first.
            await page.goto(f"{hub.http.url}/outbox")
            await expect(page).to_have_url(f"{hub.http.url}/login?next=/outbox")
            await page.fill("input[name=name]", TECHNICIAN)
            await page.fill("input[name=password]", PASSWORD)
            await shot(page, "01-login")
            await page.click("button[type=submit]")
            await expect(page).to_have_url(f"{hub.http.url}/outbox")
            await page.goto(f"{hub.http.url}/")
            pending = page.locator("#outbox-pending")
            await expect(pending).to_have_text("0")
            await expect(page.locator("[data-figure=wan]")).to_have_text("up")
            await shot(page, "02-overview")

            # WAN down: the lanes keep selling, the figure rises live (server-sent events).
            wan.mode = "blackhole"
            for n in range(6):
                assert (await lane.request(SUBMIT, sale(n))).ok
            assert (await lane.request(SUBMIT, bad)).ok
            await expect(pending).to_have_text("7")
            await expect(page.locator("[data-figure=wan]")).to_have_text(re.compile("^DOWN"))
            await expect(page.locator("#alerts")).to_contain_text("WAN_DOWN")
            await shot(page, "03-outage")

            # WAN back: the backlog drains; the sale the cloud refuses is parked.
            wan.mode = "pass"
            await expect(pending).to_have_text("0")
            await expect(page.locator("[data-figure=parked]")).to_have_text("1")
            await expect(page.locator("#alerts")).to_contain_text("OUTBOX_PARKED")
            await shot(page, "04-drained")

            # Test print: the emulated printer prints it, the console shows its preview.
            await page.click("nav >> text=Devices")
            row = page.locator("tr[data-device=front]")
            await expect(row).to_contain_text("ready")
            await row.locator("button", has_text="test print").click()
            await expect(page.locator(".notice")).to_contain_text("front: printed")
            preview = page.locator("#receipt-preview")
            await expect(preview).to_be_visible()
            width = await preview.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width > 300, "the preview image loaded"
            job = await printer.wait_for_job(1)
            assert "TEST PRINT" in job.text
            await shot(page, "05-test-print")

            # The parked sale, with the cloud's error; fixed at HQ, retried from the console.
            await page.click("nav >> text=Outbox")
            parked = page.locator(f"#parked tr[data-key='{bad['txn_id']}']")
            await expect(parked).to_contain_text("BUSINESS_RULE_VIOLATION")
            await shot(page, "06-parked")
            sim.reject_ids.clear()
            await parked.locator("input[name=reason]").fill("price fixed at HQ")
            await parked.locator("button", has_text="Retry").click()
            await expect(page.locator(".notice")).to_contain_text("re-queued")
            await hq.wait_until(lambda s: bad["txn_id"] in s.committed)
            await page.goto(f"{hub.http.url}/outbox")
            await expect(page.locator("#parked")).to_contain_text("Nothing parked.")
            await shot(page, "07-retried")
    assert hq.sim.commit_count(bad["txn_id"]) == 1
    assert sorted(p.name for p in ARTIFACTS.glob("*.png"))[-1] == "07-retried.png"
