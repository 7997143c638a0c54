"""The caller's side of a simulated call: the script, the live line, what came back and what the agent heard.

`simulator` runs a `script` on any placed `call` (ACS's or Twilio's); `telephone` is the PSTN leg and the caller's
playout model; `messages` are the records of a call's media socket; `heard` is the local-only debug channel.
"""
