"""The built-in offline Voice Live stand-in: a local server speaking the Voice Live protocol, and a model behind it.

The protocol side (`server`, `session`, `response`, `conversation`, `protocol`, `tools`) knows nothing of speech: a
test can script its responses. `standin` puts the offline model behind it: `agent` (VAD, ASR, the responder, TTS per
session) with `faq` and `faq_tools` (the deterministic responder read from the instructions, and its tool calls).
"""
