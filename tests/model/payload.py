"""Test payloads: objects whose loading writes a marker file, as a malicious model artifact would run code."""

from __future__ import annotations

from pathlib import Path


class Payload:
    """Built by skops (``__setstate__``) or unpickled (``__reduce__``): either way it writes the marker."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict) -> None:  # skops builds the object with this
        Path(state["marker"]).write_text("the model ran code")
        self.__dict__.update(state)

    def __reduce__(self):  # pickle rebuilds the object with this
        return (Path(self.marker).write_text, ("the model ran code",))

    def predict(self, X):  # pragma: no cover - never reached: loading alone runs the payload
        return X
