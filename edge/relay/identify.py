"""Which device profile a device is, from what the hub observed of it: a pure matcher.

Theory of operation
-------------------
An :class:`Observation` is what is known of one device, any of: its USB vendor:product id
(a USB printer's sysfs entry), an mDNS service type with its TXT record (a network printer's
advert), a serial probe sent and the answer read back. :func:`suggest` holds it against the
``[identity]`` of each profile (:class:`edge.relay.profiles.Identity`) and returns the
profiles it fits, best first, each with the reasons. No I/O: the callers observe, this decides.

Evidence, strongest first (the score of a profile is the sum of what matched):

====================  ======  ================================================================
evidence              score   match
====================  ======  ================================================================
USB id                100     vendor and product equal one of the profile's ``identity.usb``:
                              a product id names a model
mDNS TXT              50 + n  same service type, and every TXT key the profile expects is there
                              with a value its regular expression finds (``re.search``); ``n``
                              is the number of characters the expressions matched, so the most
                              specific pattern wins: ``ty = "EPSON TM-T88VI"`` gives TM-T88VI
                              (8) before TM-T88V (7, a prefix of it)
probe answer          20      same request bytes, and the answer (read as latin-1) matches the
                              profile's expression (``re.match``); models of one protocol answer
                              alike, so this alone rarely names one model
mDNS service only     10      same service type, the profile expects no TXT key
====================  ======  ================================================================

*Contradiction.* An observed fact the profile declares otherwise (another USB id, a TXT value
that does not match, another answer to the same probe) rules the profile out, unless that part
of its identity is listed in ``identity.uncertain`` (no primary source confirms it: a mismatch
proves little); then the profile stays, the mismatch is among its reasons, and it ranks below
the profiles nothing contradicts. Facts the profile does not declare (no USB ids, another
service type, another probe request) say nothing either way.

*Ranking.* By score; at equal score a suggestion resting only on confirmed facts goes first,
then one without a contradiction, then by model name (stable output). The suggestions are
*ambiguous* (:func:`ambiguous`) when the best two rank equal on score and confirmation: a
technician must choose (the DLE EOT answer of every ESC/POS printer, for instance).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from edge.relay.profiles import Kind, Profile

__all__ = ["Observation", "Suggestion", "ambiguous", "suggest", "suggestion_json"]

SCORE_USB: Final = 100
SCORE_TXT: Final = 50
SCORE_PROBE: Final = 20
SCORE_SERVICE: Final = 10


def _service(name: str) -> str:
    """``_pdl-datastream._tcp.local.`` and ``_pdl-datastream._tcp`` are the same type."""
    name = name.strip().lower().rstrip(".")
    return name.removesuffix(".local")


@dataclass(frozen=True, slots=True)
class Observation:
    """What is known of one device; any part may be missing."""

    usb: tuple[str, str] | None = None
    """(vendor, product), 4 hex digits each (any case)."""
    service: str = ""
    """An mDNS service type the device advertises (``_pdl-datastream._tcp``)."""
    txt: Mapping[str, str] = field(default_factory=dict)
    """That advert's TXT record."""
    probe: tuple[bytes, bytes] | None = None
    """(request sent, answer read)."""
    kind: Kind | None = None
    """Only profiles of this kind (a printer's entry is matched against printers)."""


@dataclass(frozen=True, slots=True)
class Suggestion:
    profile: Profile
    score: int
    reasons: tuple[str, ...]
    """What matched (and what did not, for an uncertain part), for a technician to read."""
    confirmed: bool
    """Every fact that matched is confirmed by a primary source (not ``uncertain``)."""
    contradicted: bool = False
    """An uncertain part of the identity disagrees with the observation."""

    @property
    def model(self) -> str:
        return self.profile.model

    def rank(self) -> tuple[int, bool, bool, str]:
        return (-self.score, not self.confirmed, self.contradicted, self.profile.model.casefold())


def suggest(observation: Observation, profiles: Iterable[Profile]) -> list[Suggestion]:
    """The profiles ``observation`` fits, best first (module docstring). Pure."""
    found = [
        suggestion
        for profile in profiles
        if observation.kind is None or profile.kind == observation.kind
        if (suggestion := _match(observation, profile)) is not None
    ]
    return sorted(found, key=Suggestion.rank)


def ambiguous(suggestions: list[Suggestion]) -> bool:
    """True when the best two cannot be told apart (same score and confirmation)."""
    if len(suggestions) < 2:
        return False
    first, second = suggestions[0], suggestions[1]
    return first.rank()[:3] == second.rank()[:3]


def suggestion_json(suggestions: list[Suggestion], *, others: int = 3) -> dict[str, Any] | None:
    """The best suggestion for display (CLI, console, API): ``model``, ``vendor``,
    ``reasons``, ``confirmed``, ``ambiguous`` and up to ``others`` runner-up models. None when
    nothing matched."""
    if not suggestions:
        return None
    best = suggestions[0]
    return {
        "model": best.model,
        "vendor": best.profile.vendor,
        "score": best.score,
        "reasons": list(best.reasons),
        "confirmed": best.confirmed,
        "ambiguous": ambiguous(suggestions),
        "others": [s.model for s in suggestions[1 : 1 + others]],
    }


# -- inside ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    uncertain: frozenset[str]
    score: int = 0
    reasons: list[str] = field(default_factory=list)
    confirmed: bool = True
    contradicted: bool = False

    def matched(self, part: str, score: int, reason: str) -> None:
        self.score += score
        if part in self.uncertain:
            self.confirmed = False
            reason += " (unconfirmed)"
        self.reasons.append(reason)

    def mismatched(self, part: str, reason: str) -> bool:
        """Record a contradiction; False when it rules the profile out."""
        if part not in self.uncertain:
            return False
        self.contradicted = True
        self.reasons.append(f"{reason} (its {part} identity is unconfirmed)")
        return True


def _match(seen: Observation, profile: Profile) -> Suggestion | None:
    identity = profile.identity
    tally = _Tally(frozenset(identity.uncertain))
    if seen.usb is not None and identity.usb:
        vid, pid = (part.lower() for part in seen.usb)
        if any((u.vid, u.pid) == (vid, pid) for u in identity.usb):
            tally.matched("usb", SCORE_USB, f"USB id {vid}:{pid}")
        elif not tally.mismatched("usb", f"USB id {vid}:{pid} is not one of its own"):
            return None
    mdns = identity.mdns
    if seen.service and mdns is not None and _service(seen.service) == _service(mdns.service):
        if not mdns.txt:
            tally.matched("mdns", SCORE_SERVICE, f"mDNS {_service(mdns.service)}")
        else:
            matched = 0
            for key, pattern in sorted(mdns.txt.items()):
                value = seen.txt.get(key)
                hit = re.search(pattern, value) if value is not None else None
                if hit is None:
                    what = f"TXT {key}={value!r}" if value is not None else f"no TXT {key}"
                    if not tally.mismatched("mdns", f"mDNS {what} does not match {pattern!r}"):
                        return None
                    matched = -1
                    break
                matched += len(hit.group(0))
            if matched >= 0:
                shown = ", ".join(f"{k}={seen.txt[k]!r}" for k in sorted(mdns.txt))
                tally.matched("mdns", SCORE_TXT + matched, f"mDNS TXT {shown}")
    probe = identity.probe
    if seen.probe is not None and probe is not None:
        request, answer = seen.probe
        if request == bytes.fromhex(probe.request):
            if re.match(probe.answer, answer.decode("latin-1")):
                tally.matched(
                    "probe", SCORE_PROBE, f"answers {probe.request} with {answer.hex(' ')}"
                )
            elif not tally.mismatched("probe", f"answers {probe.request} with {answer.hex(' ')}"):
                return None
    if tally.score == 0:
        return None
    return Suggestion(
        profile,
        tally.score,
        tuple(tally.reasons),
        confirmed=tally.confirmed,
        contradicted=tally.contradicted,
    )
