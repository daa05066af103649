"""The CLI's chat view: what a Ctrl-C in the middle of drawing leaves behind."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tandem_cli.main import ChatView
from tandem_client import Event


class CtrlC(Exception):
    """Stands for the KeyboardInterrupt a Ctrl-C raises (which would also stop pytest)."""


def delta(text: str) -> Event:
    return Event(sequence=2, turn_id="t1", time=None, kind="content_delta", text=text)


def test_a_ctrl_c_inside_finish_leaves_a_view_that_finishes_again() -> None:
    out = io.StringIO()
    view = ChatView(Console(file=out, force_terminal=True, width=80), show_user=False)
    view.show(delta("hello"))
    live = view.live
    assert live is not None  # streaming draws a live display
    stop = live.stop

    def interrupted() -> None:
        stop()
        raise CtrlC  # the key arrives as the display is taken down

    live.stop = interrupted  # type: ignore[method-assign]
    with pytest.raises(CtrlC):
        view.finish()
    # The handler that cancels the turn finishes the view again: nothing is stopped twice.
    view.finish()
    view.show(delta("more"))
    view.finish()
    assert "more" in out.getvalue()
