"""HTTP surface of the hub: health, readiness and metrics (server), the JSON API the CLI and
the registers use (*_api), and the technician's web console (web, web_auth, templates)."""
