"""The HTTP API: controllers, the request and response shapes, and how errors become problem details."""
