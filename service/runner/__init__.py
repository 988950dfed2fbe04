"""Running one program as an OS process: spawning, waiting, signalling. Knows nothing of jobs or the database."""
