"""A loop that waits for an event with a deadline stops when it is cancelled, even in the very
turn of the loop in which its event is set: Python 3.11's asyncio.wait_for swallowed that
cancellation (soundspan_hooks.waiting), and a host's stop once waited for such a feed forever."""

import ast
import asyncio
from pathlib import Path

import pytest

from soundspan_hooks.waiting import wait_until_set

ROOT = Path(__file__).parent.parent


async def test_a_cancel_in_the_turn_its_event_is_set_still_cancels():
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_until_set(event, 60))
    await asyncio.sleep(0)  # it waits on the event now
    event.set()  # a finished job wakes the feed ...
    waiting.cancel()  # ... as the host stops it
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_it_returns_when_the_event_is_set_or_the_time_is_up():
    event = asyncio.Event()
    await wait_until_set(event, 0.01)  # nobody sets it: the time runs out, no error
    event.set()
    await wait_until_set(event, None)  # set already: at once


@pytest.mark.parametrize("package", ["soundspan_host", "plugins", "hooks"])
def test_no_code_waits_with_asyncio_wait_for(package):
    for source in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "wait_for":
                pytest.fail(f"{source.relative_to(ROOT)}:{node.lineno} uses wait_for")
