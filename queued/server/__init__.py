"""The socket side: connections, framing and the request handlers."""
