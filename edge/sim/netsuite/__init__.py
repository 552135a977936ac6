"""A NetSuite-shaped simulator: record service, SuiteQL, auth and governance (see server.py)."""
