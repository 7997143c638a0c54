"""callbot: an Azure AI Voice Live agent on a phone line through Azure Communication Services."""

__version__ = "0.1.0"
