"""Local development tooling (simulator, fixtures); never deployed."""
