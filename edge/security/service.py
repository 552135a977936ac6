"""Enrollment, renewal and revocation: the async shell around the identity and the policy.

Theory of operation
-------------------
- ``create_code``: a technician (``edge device add`` or the console) names a device and its
  role; the hub records it as pending with a one-time code (only the code's hash is stored).
- ``enroll``: the device sends the code and a CSR over TLS (it has checked the hub's CA against
  the fingerprint in the mDNS advert). The code is checked and spent, the certificate issued and
  recorded in one transaction; the broker's rules are rewritten and the broker reloaded (SIGHUP,
  no connection dropped), so the device can connect at once.
- ``renew``: a device presents its current certificate (mutual TLS on the HTTPS API) and a new
  CSR; it gets a new certificate and keeps its MQTT connection (the old certificate stays valid
  until it expires, the new one is used at the next connect).
- ``revoke``: the device's certificates go on the CRL and its ACL entries go away; the broker is
  reloaded and the device's live connection is taken over and closed (``kick``), so the
  revocation takes effect at once, not at the next reconnect.
- ``maintain`` (periodic): re-signs the CRL before it lapses and renews the hub's server
  certificate before it expires, reloading the broker in place (never a restart: Greengrass's
  rotation restarts its broker and drops every client).

The identity's file and SQLite work is blocking and small: it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography import x509

from edge.bus.topics import TopicError, segment
from edge.security import pki
from edge.security.enrollment import (
    AttemptLimiter,
    EnrollError,
    check_code,
    code_hash,
    new_code,
)
from edge.security.identity import Identity

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class Granted:
    name: str
    role: str
    lane: str
    certificate_pem: str
    ca_pem: str
    not_after: float


@dataclass(frozen=True)
class NewCode:
    name: str
    role: str
    lane: str
    code: str
    expires_at: float


class Enrollment:
    def __init__(
        self,
        identity: Identity,
        *,
        hub_id: str,
        cert_days: int = 90,
        code_ttl_s: float = 900.0,
        limiter: AttemptLimiter | None = None,
        reload_broker: Callable[[], Awaitable[object]] | None = None,
        kick: Callable[[str], Awaitable[None]] | None = None,
        clock: Clock = time.time,
        server_renew_before: dt.timedelta = dt.timedelta(days=30),
    ) -> None:
        self.identity = identity
        self._hub_id = hub_id
        self._cert_days = cert_days
        self._code_ttl_s = code_ttl_s
        self._limiter = limiter or AttemptLimiter()
        self._reload_broker = reload_broker
        self._kick = kick
        self._clock = clock
        self._server_renew_before = server_renew_before
        # One change at a time: issuing, recording and reloading form one step.
        self._lock = asyncio.Lock()
        # Certificates found valid, asked on every LAN request for the feed or a price check:
        # one SQLite read per certificate, not per request. Emptied by every change to the
        # register that can end a certificate (an enrollment replacing one, a revocation).
        self._valid: set[tuple[int, str]] = set()

    def _now(self) -> tuple[float, dt.datetime]:
        now = self._clock()
        return now, dt.datetime.fromtimestamp(now, dt.UTC)

    async def create_code(self, name: str, role: str, lane: str = "") -> NewCode:
        try:
            segment(name, "device name")
            if lane:
                segment(lane, "lane id")
        except TopicError as exc:
            raise ValueError(str(exc)) from None
        if role not in pki.ROLES:
            raise ValueError(f"role must be one of {', '.join(pki.ROLES)}")
        if name == "edge-hub" or name.startswith("edge-hub"):
            raise ValueError("device names starting with 'edge-hub' are reserved for the hub")
        lane = lane or (name if role == "register" else "")
        code = new_code()
        now, _ = self._now()
        async with self._lock:
            await asyncio.to_thread(
                self.identity.add_pending,
                name=name,
                role=role,
                lane=lane,
                code_hash=code_hash(code),
                now=now,
                ttl_s=self._code_ttl_s,
            )
        log.info(
            "enrollment: code created for %s (%s), valid %.0f min",
            name,
            role,
            self._code_ttl_s / 60,
        )
        return NewCode(name, role, lane, code, now + self._code_ttl_s)

    async def enroll(self, code: str, csr_pem: str, client: str) -> Granted:
        now, now_dt = self._now()
        self._limiter.check(client, now)
        digest = code_hash(code)
        try:
            pending = check_code(await asyncio.to_thread(self.identity.pending, digest), now)
        except EnrollError as exc:
            if exc.code == "CODE_INVALID":
                self._limiter.failed(client, now)
            log.warning("enrollment: refused from %s: %s", client, exc.code)
            raise
        csr = pki.load_csr(csr_pem)
        async with self._lock:
            issued = self._issue(csr, pending.name, pending.role, now_dt)
            if not await asyncio.to_thread(self.identity.enroll, digest, issued, now):
                raise EnrollError("CODE_USED")
            await self._publish(now_dt)
        log.info(
            "enrollment: %s enrolled as %s (certificate %x until %s)",
            pending.name,
            pending.role,
            issued.serial,
            issued.not_after.date(),
        )
        return self._granted(pending.name, pending.role, pending.lane, issued)

    async def renew(self, peer: x509.Certificate | None, csr_pem: str) -> Granted:
        if peer is None:
            raise EnrollError("CERTIFICATE_REQUIRED")
        name = pki.subject_cn(peer)
        device = await asyncio.to_thread(self.identity.device, name)
        if device is None or device.state != "enrolled":
            raise EnrollError("REVOKED")
        csr = pki.load_csr(csr_pem)
        now, now_dt = self._now()
        async with self._lock:
            issued = self._issue(csr, device.name, device.role, now_dt)
            if not await asyncio.to_thread(
                self.identity.renew, name, peer.serial_number, issued, now
            ):
                raise EnrollError("REVOKED")
        log.info("enrollment: %s renewed (certificate %x)", name, issued.serial)
        return self._granted(device.name, device.role, device.lane, issued)

    def _issue(
        self, csr: x509.CertificateSigningRequest, name: str, role: str, now: dt.datetime
    ) -> pki.Issued:
        return pki.issue_device(
            self.identity.ca_key_for_issuing(),
            self.identity.ca,
            csr,
            name=name,
            role=role,
            now=now,
            days=self._cert_days,
        )

    def _granted(self, name: str, role: str, lane: str, issued: pki.Issued) -> Granted:
        pem, ca, until = issued.pem, self.identity.ca_pem(), issued.not_after.timestamp()
        return Granted(name, role, lane, pem, ca, until)

    async def revoke(self, name: str) -> bool:
        now, now_dt = self._now()
        async with self._lock:
            done = await asyncio.to_thread(self.identity.revoke, name, now)
            if done:
                await self._publish(now_dt)
        if done:
            if self._kick is not None:
                await self._kick(name)
            log.warning("enrollment: %s revoked", name)
        return done

    async def device_certificate_valid(self, peer: x509.Certificate) -> bool:
        key = (peer.serial_number, pki.subject_cn(peer))
        if key in self._valid:
            return True
        valid = await asyncio.to_thread(self.identity.certificate_valid, *key)
        if valid:
            self._valid.add(key)
        return valid

    async def maintain(self) -> None:
        """Re-sign the CRL and renew the server certificate when due; reload the broker."""
        _, now_dt = self._now()
        async with self._lock:
            changed = False
            if await asyncio.to_thread(self.identity.crl_needs_refresh, now_dt):
                await asyncio.to_thread(self.identity.publish_rules, now_dt)
                changed = True
            if await asyncio.to_thread(
                self.identity.server_needs_renewal, now_dt, self._server_renew_before
            ):
                await asyncio.to_thread(self._renew_server, now_dt)
                log.info("enrollment: the hub's server certificate was renewed")
                changed = True
            if changed:
                await self._reload()

    def _renew_server(self, now: dt.datetime) -> None:
        current = self.identity.server_certificate()
        sans = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.identity.issue_server_certificate(
            hub_id=self._hub_id,
            names=[n for n in sans.get_values_for_type(x509.DNSName) if n != "localhost"],
            addresses=[
                str(a) for a in sans.get_values_for_type(x509.IPAddress) if str(a) != "127.0.0.1"
            ],
            now=now,
        )

    async def _publish(self, now: dt.datetime) -> None:
        """The device register changed (enrolled, revoked): rules out, cached verdicts gone."""
        self._valid.clear()
        await asyncio.to_thread(self.identity.publish_rules, now)
        await self._reload()

    async def _reload(self) -> None:
        """The broker takes the rules up before the change is answered: a device enrolled a
        moment ago may connect at once, a revoked one is refused from now on."""
        if self._reload_broker is not None:
            await self._reload_broker()
