"""The progress helper: every item comes through, and nothing is drawn off a terminal or in CI."""

from __future__ import annotations

import io

import pytest

from deepfake_kedro.progress import bars_enabled, progress


class Terminal(io.StringIO):
    """A captured stream that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def not_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)


def test_off_a_terminal_every_item_comes_through_and_nothing_is_drawn():
    stream = io.StringIO()
    assert list(progress(iter(range(250)), "indexing", total=250, stream=stream)) == list(range(250))
    with progress(description="faces", total=10, stream=stream) as bar:
        bar.update(10)
        bar.set_postfix(loss="0.5")
    assert stream.getvalue() == ""


def test_on_a_terminal_the_bar_is_drawn_then_cleared():
    stream = Terminal()
    assert list(progress(range(7), "epoch 1/1", unit="batch", stream=stream)) == list(range(7))
    # The bar is drawn (0/7 at the start) and cleared when done, so the log keeps only its own lines.
    assert "epoch 1/1:" in stream.getvalue() and "0/7" in stream.getvalue()
    assert stream.getvalue().endswith("\r")


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_ci_silences_the_bar_even_on_a_terminal(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    stream = Terminal()
    assert not bars_enabled(stream)
    assert list(progress(range(5), "x", stream=stream)) == list(range(5))
    assert stream.getvalue() == ""


def test_enabled_only_for_a_terminal():
    assert bars_enabled(Terminal())
    assert not bars_enabled(io.StringIO())
