"""The README's screenshot of the web page: the bundled model separating the example song, in Chromium.

    python scripts/web_screenshot.py                       # -> docs/figures/web.png
    python scripts/web_screenshot.py --out /tmp/page.png --example-seconds 12

Starts ``bsmamba2 serve`` on a free 127.0.0.1 port (as scripts/web_load_check.py does), clicks "use the
example song" and "Separate" in Debian's Chromium through Playwright, waits for the stems, and saves the
page as a 256-colour PNG (small enough to commit).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright
from web_load_check import REPO, own_server

from bsmamba2.atomic import atomic_write

LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "figures" / "web.png")
    p.add_argument("--model", type=Path, default=None, help="model file (default: the bundled model)")
    p.add_argument("--example-seconds", type=float, default=10.0, help="example song length (default 10)")
    p.add_argument("--segment", type=float, default=2.0, help="the server's chunk length (default 2)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)
    args.jobs, args.extra = 1, ["--example-seconds", str(args.example_seconds)]
    with own_server(args) as (base, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.set_default_timeout(600_000)
        page.goto(base)
        page.wait_for_selector("#stems input")
        page.click("#example")
        page.click("#run")
        page.wait_for_selector("#results:not([hidden])")
        page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        png = page.screenshot(full_page=True)
        browser.close()
    small = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as tmp:
        small.save(tmp, format="PNG", optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
