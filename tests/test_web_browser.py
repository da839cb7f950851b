"""The web page in a real browser: ``bsmamba2 serve`` in a subprocess on a free 127.0.0.1 port, driven by
Playwright against Debian's Chromium (Playwright's own browser download cannot work offline).

A generated song goes in through the file picker; the stems must play (duration ~ the song's) and their
downloads must equal ``Separator.separate_file`` with the same settings, sample for sample; the progress bar
must end at the separation's real chunk count. A corrupt file dropped on the page shows the server's error
and the server stays up. Screenshots land in the test's tmp dir. Under CI (``CI`` set) a missing Chromium
or Playwright fails the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from bsmamba2 import audio
from bsmamba2.api import Separator
from bsmamba2.audio import MODEL_SAMPLE_RATE as SAMPLE_RATE
from bsmamba2.demo import make_example

CHROMIUM = Path(os.environ.get("BSMAMBA2_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SONG_SECONDS = 3.0
# The server's separation settings; the API reference below uses the same ones.
SETTINGS = {"device": "cpu", "precision": "fp32", "segment": 1.0, "overlap": 0.5, "batch_size": 1}
REPO = Path(__file__).resolve().parents[1]


def _need(ok: bool, reason: str) -> None:
    """CI must have the browser stack (a silent skip would hide a broken install); a laptop may not."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
    pytest.skip(reason)


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed (pip install playwright, or the project's dev extra)")
    _need(CHROMIUM.is_file(), f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    tmp: Path  # the server's TMPDIR: its bsmamba2-web-* root lives here
    log: Path


@pytest.fixture(scope="module")
def server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _playwright()  # skip (or fail under CI) before starting anything
    tmp = tmp_path_factory.mktemp("server_tmp")
    port = _free_port()
    opts = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    cmd = [sys.executable, "-m", "bsmamba2", "serve", "--model", str(tiny_model_path), "--port", str(port),
           "--example-seconds", "2", *opts]  # fmt: skip
    # one intra-op thread, as in this test process (conftest), so both runs do the same float maths
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    srv = Server(f"http://127.0.0.1:{port}", proc, tmp, log)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{srv.url}/api/config", timeout=2) as r:
                json.load(r)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.2)
    yield srv
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    sync_playwright = _playwright()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 900, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(90_000)
    pg.goto(server.url)
    pg.wait_for_selector("#stems input")  # the config arrived and the stem boxes are drawn
    yield pg
    context.close()


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mix, _, _ = make_example(SONG_SECONDS, "dense", 0)  # (2, N): a generated song with vocals
    return audio.write(tmp_path_factory.mktemp("song") / "song.flac", mix, SAMPLE_RATE, subtype="24")


def _record_progress(page: Any) -> None:
    """Keep every (value, max) the progress bar shows, in window.seen (the value attribute changes)."""
    page.evaluate(
        """() => { window.seen = []; const bar = document.getElementById('progress');
        new MutationObserver(() => { if (bar.hasAttribute('value')) window.seen.push([bar.value, bar.max]); })
          .observe(bar, {attributes: true}); }"""
    )


def test_page_separates_a_song(
    page: Any, server: Server, song: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    page.set_input_files("#file", str(song))  # the file picker
    assert "song.flac" in page.inner_text("#source")
    _record_progress(page)
    page.click("#run")
    page.wait_for_selector("#results:not([hidden])")
    assert page.is_hidden("#error")

    # the stems play: each <audio> loads, lasts as long as the song, and its time moves when played
    stems = page.eval_on_selector_all("audio", "els => els.map(e => e.dataset.stem)")
    assert stems == ["vocals", "instrumental"]
    page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)")
    durations = page.eval_on_selector_all("audio", "els => els.map(e => e.duration)")
    assert all(abs(d - SONG_SECONDS) < 0.05 for d in durations), durations
    page.eval_on_selector("audio[data-stem=vocals]", "a => { a.muted = true; return a.play(); }")
    page.wait_for_function("document.querySelector('audio[data-stem=vocals]').currentTime > 0")

    # the downloads equal the API's output for the same file and settings, sample for sample
    reports: list[dict[str, Any]] = []
    sep = Separator.from_pretrained(tiny_model_path, callback=reports.append, **SETTINGS)
    expected = sep.separate_file(song, tmp_path / "api")
    for stem in stems:
        with page.expect_download() as info:
            page.click(f"a[data-stem={stem}]")
        download = info.value
        assert download.suggested_filename == f"song_{stem}.wav"
        got = tmp_path / download.suggested_filename
        download.save_as(got)
        ours, rate = sf.read(got, dtype="float32")
        theirs, rate_api = sf.read(expected[stem], dtype="float32")
        assert rate == rate_api == SAMPLE_RATE and ours.shape == theirs.shape
        assert np.array_equal(ours, theirs), f"{stem}: max diff {np.abs(ours - theirs).max()}"

    # the bar was driven by the separation's chunk count, never went back, and ended full
    seen = page.evaluate("window.seen")
    total = reports[-1]["total"]
    assert seen and seen[-1] == [total, total], seen
    running = [v for v, m in seen if m == total]
    assert running == sorted(running)
    images = page.eval_on_selector_all(
        "#images img", "els => els.map(e => [e.dataset.label, e.naturalHeight])"
    )
    assert images == [["mixture", 128], ["vocals", 128]]
    page.screenshot(path=str(tmp_path / "web.png"), full_page=True)
    assert (tmp_path / "web.png").stat().st_size > 10_000


def _drop_file(page: Any, name: str, data: bytes) -> None:
    """Drop a file on the drop zone as a person dragging it from a file manager would."""
    page.evaluate(
        """([name, bytes]) => { const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], name, {type: 'audio/wav'}));
        const zone = document.getElementById('drop');
        for (const type of ['dragenter', 'dragover', 'drop'])
          zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true})); }""",
        [name, list(data)],
    )


def test_corrupt_upload_shows_the_error_and_the_server_stays_up(
    page: Any, server: Server, tmp_path: Path
) -> None:
    _drop_file(page, "broken.wav", b"RIFF\x10\x00\x00\x00WAVEnot really a wav file")
    assert "broken.wav" in page.inner_text("#source")
    page.click("#run")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == "broken.wav: not a readable audio file"
    assert page.is_hidden("#results") and page.is_hidden("#progress-box")
    page.screenshot(path=str(tmp_path / "error.png"))
    page.click("#example")  # the same page, the same server: the next job works
    page.click("#run")
    page.wait_for_selector("#results:not([hidden])")
    assert page.is_hidden("#error")
    assert server.proc.poll() is None


def test_shutdown_deletes_the_uploads(server: Server) -> None:
    roots = list(server.tmp.glob("bsmamba2-web-*"))
    assert len(roots) == 1 and any((roots[0] / "jobs").iterdir())  # the earlier tests' jobs
    server.proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully (the app's lifespan ends), then re-raises the signal it caught
    assert server.proc.wait(60) in (0, -signal.SIGTERM), server.log.read_text()
    assert "removed its temp folder" in server.log.read_text()
    assert not roots[0].exists()
