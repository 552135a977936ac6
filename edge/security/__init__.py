"""The hub's identity, device enrollment and the LAN's access rules (issue 7)."""
