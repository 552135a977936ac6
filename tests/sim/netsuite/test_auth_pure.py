"""The simulator's own RFC 5849 base string agrees with the client's signer on any query
(two implementations written apart; a disagreement means one of them misreads the RFC)."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from edge.sim.netsuite.auth import base_string
from edge.uplink.netsuite.auth import signature_base_string

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
PAIRS = st.lists(st.tuples(TEXT, TEXT), max_size=5)
OAUTH = {
    "oauth_consumer_key": "ck",
    "oauth_token": "tok",
    "oauth_nonce": "n0nce",
    "oauth_timestamp": "1790000000",
    "oauth_signature_method": "HMAC-SHA256",
    "oauth_version": "1.0",
}


@given(PAIRS, st.sampled_from(["GET", "post", "Put"]), st.sampled_from(["", ":8443", ":443"]))
def test_base_strings_agree(pairs: list[tuple[str, str]], method: str, port: str) -> None:
    query = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in pairs)
    url = f"https://Acct.Example.com{port}/services/rest/record/v1/cashSale?{query}"
    assert base_string(method, url, OAUTH) == signature_base_string(method, url, OAUTH)
