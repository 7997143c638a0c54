"""A local ACS stand-in for the phone simulator: Call Automation REST (HMAC-checked), callbacks, tokens and media.

`PhoneNetwork` (`network`) plays Azure Communication Services towards one callbot: the REST API (`server`, whose
signature check is `signature`, whose body checks and transfers are `request_checks`), the Event Grid and callback
events it sends (`events`), ACS's token signer and JWKS (`identity`), and the media WebSocket of each placed call.
"""
