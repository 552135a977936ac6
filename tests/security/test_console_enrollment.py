"""The console's enrollment page: a technician makes a code (with its QR code), a device enrolls
with it, the technician revokes it; and the console is served over HTTPS on the store LAN."""

from __future__ import annotations

import re
import ssl

import aiohttp

from edge.app import Hub
from edge.sim.enroll_client import enroll
from tests.security.test_enrollment_hub import hub  # noqa: F401  (the secured hub fixture)
from tests.test_console_pages import console_session, csrf_of


async def test_code_qr_enroll_and_revoke_from_the_console(hub: Hub) -> None:  # noqa: F811
    assert hub.hub_identity is not None
    async with console_session(hub) as http:
        csrf = await csrf_of(http, f"{hub.http.url}/enroll")
        async with http.post(
            f"{hub.http.url}/enroll",
            data={"csrf": csrf, "name": "REG-7", "role": "register", "lane": ""},
        ) as response:
            assert response.status == 200
            page = await response.text()
        found = re.search(r'id="enroll-code">([0-9A-Z]{4}-[0-9A-Z]{4})<', page)
        assert found is not None, page
        assert "<svg" in page  # the QR code, inline: no internet, no image file
        assert hub.hub_identity.ca_fingerprint in page
        creds = await enroll(
            hub.http.tls_url, found.group(1), fingerprint=hub.hub_identity.ca_fingerprint
        )
        assert creds.name == "REG-7"
        async with http.get(f"{hub.http.url}/enroll") as response:
            page = await response.text()
        assert re.search(r'data-device="REG-7">.*?<td class="ok">enrolled</td>', page, re.S)

        # Without the CSRF token nothing happens.
        async with http.post(f"{hub.http.url}/enroll/REG-7/revoke", data={}) as response:
            assert response.status == 403
        assert hub.hub_identity.device("REG-7").state == "enrolled"  # type: ignore[union-attr]
        async with http.post(
            f"{hub.http.url}/enroll/REG-7/revoke", data={"csrf": csrf}
        ) as response:
            assert response.status == 200
            assert "REG-7 revoked" in await response.text()
        assert hub.hub_identity.device("REG-7").state == "revoked"  # type: ignore[union-attr]

        async with http.post(
            f"{hub.http.url}/enroll", data={"csrf": csrf, "name": "bad/name", "role": "register"}
        ) as response:
            assert "no code created" in await response.text()


async def test_the_console_is_served_over_https_on_the_store_lan(hub: Hub) -> None:  # noqa: F811
    assert hub.hub_identity is not None
    trust = ssl.create_default_context(cadata=hub.hub_identity.ca_pem())
    trust.check_hostname = False
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{hub.http.tls_url}/login", ssl=trust) as response,
    ):
        assert response.status == 200
        assert "password" in (await response.text()).lower()
