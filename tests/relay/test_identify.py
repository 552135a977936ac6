"""The profile matcher (edge.relay.identify): every shipped profile that says how to recognise
it is recognised from a real observation of its model, the most specific profile ranks
first, a tie is reported as a tie, and what fits nothing suggests nothing.

The examples are what the devices answer, built with our own codecs where we have one (the
same bytes the emulators send), so a profile whose identity drifts from its protocol fails
here, naming the profile."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from devices.escpos_status import PrinterStatus, StatusRequest, encode_status_request
from devices.scale_cas import encode_ecr_frame
from devices.scale_magellan import encode_weight_frame as magellan_frame
from devices.scale_scp01 import Scp01Status, encode_status_frame
from edge.discovery import PRINTER_TYPE
from edge.relay.identify import Observation, ambiguous, suggest, suggestion_json
from edge.relay.profiles import Profile, load_profiles

PROFILES = list(load_profiles())
DLE_EOT_1 = encode_status_request(StatusRequest.PRINTER)
HEALTHY = bytes((PrinterStatus().to_byte(),))  # 0x12
ESCPOS_PRINTERS = ["TM-m30", "TM-T20II", "TM-T88V", "TM-T88VI", "TSP143"]

#: model -> what its mDNS advert's TXT says (printers publish ``ty`` = make and model).
TXT_EXAMPLES = {
    "TM-T88V": {"ty": "EPSON TM-T88V", "note": "front counter"},
    "TM-T88VI": {"ty": "EPSON TM-T88VI"},
}

#: model -> the answer it gives to its own probe request.
PROBE_ANSWERS = {
    "TM-T88V": HEALTHY,
    "TM-T88VI": HEALTHY,
    "TM-m30": bytes((PrinterStatus(drawer_pin3_high=True).to_byte(),)),
    "TM-T20II": bytes((PrinterStatus(offline=True).to_byte(),)),
    "TSP143": HEALTHY,
    "8217": b"\x02E\rhello",  # echo mode: STX E CR, then the echo (Odoo's probe)
    "Magellan 8400": magellan_frame(Decimal("1.234"), monitor=True),
    "PD-II": encode_ecr_frame(Decimal("1.234")),
    "7821": encode_status_frame(Scp01Status()),
}


def declares_identity(profile: Profile) -> bool:
    i = profile.identity
    return bool(i.usb) or i.mdns is not None or i.probe is not None


IDENTIFIED = [p for p in PROFILES if declares_identity(p)]


def models(observation: Observation) -> list[str]:
    return [s.model for s in suggest(observation, PROFILES)]


@pytest.mark.parametrize("profile", IDENTIFIED, ids=[p.model for p in IDENTIFIED])
def test_each_profile_is_recognised_from_its_own_models_example(profile: Profile) -> None:
    identity = profile.identity
    for usb in identity.usb:
        seen = models(Observation(usb=(usb.vid.upper(), usb.pid)))
        assert seen[:1] == [profile.model], f"USB {usb.vid}:{usb.pid}"
    if identity.mdns is not None:
        assert profile.model in TXT_EXAMPLES, f"add an mDNS TXT example for {profile.model}"
        advert = Observation(
            service=f"{identity.mdns.service}.local.", txt=TXT_EXAMPLES[profile.model]
        )
        assert models(advert)[:1] == [profile.model], "the most specific TXT match ranks first"
    if identity.probe is not None:
        assert profile.model in PROBE_ANSWERS, f"add a probe answer for {profile.model}"
        request = bytes.fromhex(identity.probe.request)
        found = suggest(Observation(probe=(request, PROBE_ANSWERS[profile.model])), PROFILES)
        assert profile.model in [s.model for s in found]
        assert all(s.profile.kind == profile.kind for s in found), "a probe names one kind"


def test_every_profile_without_a_way_to_recognise_it_is_known_to_be_so() -> None:
    """A display that only listens and a drawer that hangs on a printer cannot be probed;
    any other profile must say how to recognise it."""
    assert {p.kind for p in PROFILES if not declares_identity(p)} <= {"display", "drawer"}


def test_a_more_specific_txt_pattern_ranks_first_and_is_not_a_tie() -> None:
    """``(?i)TM-T88V`` also finds "TM-T88VI": the TM-T88VI profile matches more of it."""
    found = suggest(
        Observation(service=PRINTER_TYPE, txt={"ty": "EPSON TM-T88VI"}, kind="printer"), PROFILES
    )
    assert [s.model for s in found] == ["TM-T88VI", "TM-T88V"]
    assert found[0].score > found[1].score
    assert not ambiguous(found)
    assert found[0].reasons == ("mDNS TXT ty='EPSON TM-T88VI' (unconfirmed)",)
    assert not found[0].confirmed  # the mDNS identity is [NV] in both profiles


def test_the_escpos_status_answer_alone_is_a_tie_between_every_escpos_printer() -> None:
    found = suggest(Observation(probe=(DLE_EOT_1, HEALTHY)), PROFILES)
    assert [s.model for s in found] == sorted(ESCPOS_PRINTERS, key=str.casefold)
    assert ambiguous(found)
    shown = suggestion_json(found)
    assert shown is not None
    assert (shown["ambiguous"], len(shown["others"])) == (True, 3)
    assert shown["reasons"] == ["answers 10 04 01 with 12"]


def test_a_usb_id_outranks_a_shared_probe_answer() -> None:
    found = suggest(Observation(usb=("04b8", "0202"), probe=(DLE_EOT_1, HEALTHY)), PROFILES)
    assert found[0].model == "TM-T88V"
    assert found[0].score == 120
    assert not ambiguous(found)
    assert found[0].reasons == ("USB id 04b8:0202 (unconfirmed)", "answers 10 04 01 with 12")


def test_an_unconfirmed_identity_that_disagrees_ranks_last_but_stays() -> None:
    """TM-T88V's USB ids are [NV]: another Epson product id does not rule it out, but it no
    longer ties with the printers nothing contradicts."""
    found = suggest(Observation(usb=("04b8", "0e15"), probe=(DLE_EOT_1, HEALTHY)), PROFILES)
    assert [s.model for s in found][-1] == "TM-T88V"
    assert found[-1].contradicted
    assert "USB id 04b8:0e15 is not one of its own" in found[-1].reasons[0]


def test_a_confirmed_identity_that_disagrees_rules_the_profile_out() -> None:
    raw: dict[str, Any] = msgspec.to_builtins(next(p for p in PROFILES if p.model == "TM-T88V"))
    raw["model"] = "TM-CONFIRMED"
    raw["identity"]["uncertain"] = []
    confirmed = msgspec.convert(raw, Profile)
    assert suggest(Observation(usb=("04b8", "0202")), [confirmed])[0].confirmed
    assert suggest(Observation(usb=("04b8", "0e15"), probe=(DLE_EOT_1, HEALTHY)), [confirmed]) == []
    other_ty = Observation(service=PRINTER_TYPE, txt={"ty": "Star TSP143"})
    assert suggest(other_ty, [confirmed]) == []


@pytest.mark.parametrize(
    "observation",
    [
        Observation(),
        Observation(usb=("1234", "5678")),
        Observation(service="_ipp._tcp", txt={"ty": "EPSON TM-T88VI"}),
        Observation(service=PRINTER_TYPE, txt={"ty": "Brother HL-2280DW"}),
        Observation(service=PRINTER_TYPE),
        Observation(probe=(DLE_EOT_1, b"\x13")),  # not a DLE EOT answer (fixed bits)
        Observation(probe=(b"W", b"\x0201.234\r")),  # a request no profile sends
        Observation(probe=(DLE_EOT_1, HEALTHY), kind="scale"),
    ],
    ids=["nothing", "usb", "ipp", "other-ty", "no-txt", "bad-answer", "other-probe", "kind"],
)
def test_what_fits_no_profile_suggests_nothing(observation: Observation) -> None:
    found = suggest(observation, PROFILES)
    assert found == []
    assert suggestion_json(found) is None
    assert not ambiguous(found)
