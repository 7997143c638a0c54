"""The web phone: talk to the agent from a browser (`GET /phone`), a call like any other on its own transport."""
