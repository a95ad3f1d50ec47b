"""examples/ws_chat end to end, the example run as users run it (a
subprocess serving on a port): two headless Chromium pages in the room, one
says something, the other shows it; then 1,000 clients of the websockets
library in the room at once, 50 of them saying 10 lines each, every client
hearing all 500 lines with each speaker's in order (none lost, none
reordered), fanned out across the workers."""

import asyncio
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect

from browser import chromium, console_errors, wait_for
from conftest import LOCALHOST

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "ws_chat" / "chat.py"

pytestmark = pytest.mark.end_to_end


@pytest.fixture(scope="module")
def chat():
    child = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--host", LOCALHOST, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYPARALLEL_WORKERS": "2"},
    )
    line = child.stdout.readline()
    match = re.match(r"chat on (http://\S+)/$", line.strip())
    if match is None:
        child.kill()
        raise AssertionError(f"no startup line: {line!r} {child.stderr.read()}")
    yield match.group(1)
    child.terminate()
    child.wait(10)


@pytest.mark.timeout(120)
def test_two_browser_pages_chat(chat):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with chromium() as first, chromium() as second:
        for page in (first, second):
            page.get(chat + "/")
            wait_for(page, lambda d: d.find_element(By.ID, "status").text.startswith("connected as"))
        name = first.find_element(By.ID, "status").text.removeprefix("connected as ")
        first.find_element(By.ID, "text").send_keys("hello from the first page", Keys.ENTER)
        shown = wait_for(
            second,
            lambda d: [li.text for li in d.find_elements(By.CSS_SELECTOR, "#log li")] or None,
        )
        assert shown == [f"{name}: hello from the first page"]
        wait_for(first, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log li")) == 1)
        assert console_errors(first) == [] and console_errors(second) == []


CLIENTS = 1000
SPEAKERS = 50
LINES = 10


@pytest.mark.timeout(180)
def test_a_thousand_clients_in_one_room(chat):
    url = chat.replace("http://", "ws://") + "/chat"

    async def member(index, joined, go):
        async with connect(url, max_queue=None, open_timeout=60, ping_interval=None) as ws:
            me = json.loads(await ws.recv())["you"]
            joined.append(me)
            if len(joined) == CLIENTS:
                go.set()
            await go.wait()
            if index < SPEAKERS:
                for line in range(LINES):
                    await ws.send(json.dumps({"text": str(line)}))
            heard = {}
            for _ in range(SPEAKERS * LINES):
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                heard.setdefault(message["from"], []).append(int(message["text"]))
            return me, heard

    async def room():
        joined, go = [], asyncio.Event()
        results = await asyncio.gather(*(member(i, joined, go) for i in range(CLIENTS)))
        return joined, results

    start = time.monotonic()
    joined, results = asyncio.run(room())
    took = time.monotonic() - start
    speakers = {name for name, _ in results[:SPEAKERS]}
    assert len(set(joined)) == CLIENTS
    for _, heard in results:
        assert heard.keys() == speakers
        assert all(lines == list(range(LINES)) for lines in heard.values())
    assert took < 150
