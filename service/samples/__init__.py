"""Sample job programs shipped with the service, so the first run does something meaningful."""
