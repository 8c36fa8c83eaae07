"""The finalize step: fetch a finished video safely, store it with its record, notify."""
