"""fastgw: a fast, self-hosted L7 application gateway with native WebSocket support."""

__version__ = "0.1.0"
