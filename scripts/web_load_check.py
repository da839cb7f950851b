"""Load check for ``bsmamba2 serve``: N songs uploaded at once must all be separated, none refused or failed.

    python scripts/web_load_check.py                      # its own server (bundled model) on a free port
    python scripts/web_load_check.py --model tiny.safetensors --jobs 5 --seconds 3
    python scripts/web_load_check.py --url http://127.0.0.1:7860   # a server already running here

The songs are generated (the demo's synthesizer, one seed per job) and posted together from N threads; each
thread follows its job to the end (bounded by --timeout) and downloads every stem, which must have the
song's length and sample rate. A table of queue positions and times is printed; the exit code is 1 if any
job failed. Traffic goes only to a loopback address. With its own server, the script also stops it
(SIGTERM) and checks that its temp folder is gone. Not a timed test: the times are printed, never judged.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bsmamba2.audio import MODEL_SAMPLE_RATE as SAMPLE_RATE  # noqa: E402
from bsmamba2.demo import make_example  # noqa: E402


@dataclass
class Outcome:
    seed: int
    state: str = "not sent"
    message: str = ""
    positions: list[int] = field(default_factory=list)  # queue positions seen while waiting
    waited: float = 0.0  # seconds from the upload's answer to the job's start
    ran: float = 0.0  # seconds the separation took (the server's count)
    stems: list[str] = field(default_factory=list)


def request(url: str, data: bytes | None = None, timeout: float = 60.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def song(seconds: float, seed: int) -> tuple[bytes, int]:
    """A generated song as 16-bit FLAC bytes, and its length in samples."""
    mix, _, _ = make_example(seconds, "dense", seed)  # (2, N)
    buf = io.BytesIO()
    sf.write(buf, mix.T, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue(), mix.shape[1]


def run_job(
    base: str, seed: int, data: bytes, frames: int, start: threading.Barrier, limit: float
) -> Outcome:
    out = Outcome(seed)
    start.wait()  # every thread posts at the same moment
    status, body = request(f"{base}/api/jobs?name=song{seed}.flac", data)
    job = json.loads(body)
    if status != 201:
        out.state, out.message = f"refused ({status})", job.get("error", "")
        return out
    asked = time.monotonic()
    deadline = asked + limit
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        if job["state"] == "queued":
            out.positions.append(job["position"])
        elif not out.waited:
            out.waited = time.monotonic() - asked
        time.sleep(0.2)
        job = json.loads(request(f"{base}/api/jobs/{job['id']}")[1])
    out.state, out.message, out.ran = job["state"], job["message"], job["seconds"] or 0.0
    if out.state not in ("done", "error"):
        out.state, out.message = "timed out", f"still {job['state']} after {limit:g} s"
    for s in job.get("stems", []):
        code, wav = request(base + s["url"])
        x, rate = sf.read(io.BytesIO(wav)) if code == 200 else (None, 0)
        if x is None or rate != SAMPLE_RATE or x.shape[0] != frames:
            out.state, out.message = "error", f"{s['file']}: bad download (HTTP {code})"
        out.stems.append(s["stem"])
    return out


@contextmanager
def own_server(args: argparse.Namespace) -> Iterator[tuple[str, Path]]:
    """``bsmamba2 serve`` in a subprocess on a free 127.0.0.1 port; yields (URL, its temp folder's parent)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp(prefix="web-load-check-"))
    cmd = [sys.executable, "-m", "bsmamba2", "serve", "--port", str(port), "--segment", str(args.segment),
           "--max-queue", str(max(args.jobs, 8)), "--device", "cpu"]  # fmt: skip
    if args.model:
        cmd += ["--model", str(args.model)]
    cmd += getattr(args, "extra", [])  # more serve options from a caller (scripts/web_screenshot.py)
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                request(f"{base}/api/config", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start:\n{proc.communicate()[0].decode()}") from None
                time.sleep(0.3)
        yield base, tmp
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        left = list(tmp.glob("bsmamba2-web-*"))
        print(
            f"server stopped (exit {proc.returncode}); its temp folder {'is LEFT: ' + str(left) if left else 'is gone'}"
        )
        for p in tmp.iterdir():
            if p.is_file():
                p.unlink()
        if not left:
            tmp.rmdir()


def check(base: str, args: argparse.Namespace) -> int:
    songs = [song(args.seconds, seed) for seed in range(args.jobs)]
    start = threading.Barrier(args.jobs)
    outcomes: list[Outcome | None] = [None] * args.jobs

    def one(i: int) -> None:
        outcomes[i] = run_job(base, i, *songs[i], start, args.timeout)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.jobs)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.timeout + 120)
    wall = time.monotonic() - t0
    print(f"{args.jobs} concurrent uploads of {args.seconds:g} s songs to {base}")
    print(
        f"{'job':>3}  {'state':<10} {'queue positions seen':<22} {'waited s':>8} {'ran s':>6}  stems / message"
    )
    failed = 0
    for i, o in enumerate(outcomes):
        if o is None:
            o = Outcome(i, state="lost", message="its thread did not finish")
        failed += o.state != "done"
        seen = ",".join(str(p) for p in dict.fromkeys(o.positions)) or "-"
        print(
            f"{i:>3}  {o.state:<10} {seen:<22} {o.waited:>8.1f} {o.ran:>6.1f}  {' '.join(o.stems) or o.message}"
        )
    alive = request(f"{base}/api/config", timeout=5)[0] == 200
    print(f"load check: {args.jobs - failed} of {args.jobs} jobs done, {failed} failed, in {wall:.1f} s; "
          f"server {'still answering' if alive else 'NOT answering'}")  # fmt: skip
    return 0 if failed == 0 and alive else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=None, help="a running server (loopback only); default: start one")
    p.add_argument("--model", type=Path, default=None, help="model for the started server (default: bundled)")
    p.add_argument("--jobs", type=int, default=5, help="concurrent uploads (default 5)")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each song (default 3)")
    p.add_argument("--segment", type=float, default=2.0, help="the started server's chunk length (default 2)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds a job may take in all (default 900)")
    args = p.parse_args(argv)
    if args.url is None:
        with own_server(args) as (base, _):
            return check(base, args)
    host = urllib.parse.urlsplit(args.url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"--url must be a loopback address (127.0.0.1, localhost, [::1]), not {host}")
    return check(args.url.rstrip("/"), args)


if __name__ == "__main__":
    sys.exit(main())
