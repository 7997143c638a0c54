"""A local Twilio stand-in for the phone simulator: the voice webhook, TwiML, Media Streams and the REST API.

`TwilioNetwork` (`network`) plays Twilio towards one callbot: it signs and posts the voice webhook, follows the
TwiML it gets back (`twiml`), opens the Media Streams socket of a ``<Connect><Stream>`` and serves the REST calls
callbot makes to end or redirect a call (`rest`, HTTP basic auth). `TwilioCall` (`call`) is one placed call: the
caller as mu-law 8 kHz frames in real time, the bot's audio played out in a model of Twilio's playback buffer
(`playout`: marks echoed once played, ``clear`` drops what is queued). The wire messages are in `messages`.
"""

from callbot.local.twilio.call import TwilioCall
from callbot.local.twilio.network import TwilioNetwork, TwilioRefused

__all__ = ["TwilioCall", "TwilioNetwork", "TwilioRefused"]
