"""``bsmamba2 serve``: the web app on http://127.0.0.1:7860/ (needs ``pip install 'bsmamba2[web]'``).

bsmamba2 serve                                   # the bundled model, localhost only
bsmamba2 serve --models my_models/ --port 8080   # offer every model file in a folder too
bsmamba2 serve --host 0.0.0.0                    # reachable from other machines: only on a trusted network
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from pathlib import Path

from bsmamba2.apply import DEFAULT_OVERLAP
from bsmamba2.device import BACKEND_HELP, BACKENDS, DEVICES, PRECISIONS
from bsmamba2.errors import UserError
from bsmamba2.web import settings as defaults
from bsmamba2.web.catalog import ModelCatalog
from bsmamba2.web.settings import WebSettings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--host",
        default=defaults.DEFAULT_HOST,
        help=f"address to listen on (default {defaults.DEFAULT_HOST}: this machine only)",
    )
    add("--port", type=int, default=defaults.DEFAULT_PORT, help=f"port (default {defaults.DEFAULT_PORT})")
    add("-m", "--model", type=Path, default=None, help="the default model file (default: the bundled model)")
    add("--models", type=Path, default=None, metavar="DIR", help="also offer every model file in DIR")
    add("--device", default="auto", help=f"{' | '.join(DEVICES)} or cuda:N (default auto)")
    add("--precision", default="auto", choices=PRECISIONS, help="autocast precision (default auto)")
    add("--backend", default="auto", choices=BACKENDS, help=BACKEND_HELP)
    add("--segment", type=float, default=8.0, help="chunk length in seconds (default 8)")
    add("--overlap", type=float, default=DEFAULT_OVERLAP, help=f"chunk overlap (default {DEFAULT_OVERLAP})")
    add("--batch-size", type=int, default=4, help="chunks per forward pass (default 4)")
    add(
        "--max-upload-mb",
        type=float,
        default=defaults.DEFAULT_MAX_UPLOAD_MB,
        help=f"largest upload in MB (default {defaults.DEFAULT_MAX_UPLOAD_MB:g})",
    )
    add(
        "--max-seconds",
        type=float,
        default=defaults.DEFAULT_MAX_SECONDS,
        help=f"longest song in seconds (default {defaults.DEFAULT_MAX_SECONDS:g})",
    )
    add(
        "--job-ttl",
        type=float,
        default=defaults.DEFAULT_JOB_TTL,
        help=f"seconds a finished job's files are kept (default {defaults.DEFAULT_JOB_TTL:g})",
    )
    add(
        "--max-queue",
        type=int,
        default=defaults.DEFAULT_MAX_QUEUE,
        help=f"jobs waiting or running before uploads are refused (default {defaults.DEFAULT_MAX_QUEUE})",
    )
    add("--example-seconds", type=float, default=defaults.DEFAULT_EXAMPLE_SECONDS, help=f"length of the example song (default {defaults.DEFAULT_EXAMPLE_SECONDS:g})")  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> WebSettings:
    return WebSettings(
        host=args.host,
        port=args.port,
        model=args.model,
        models_dir=args.models,
        device=args.device,
        precision=args.precision,
        backend=args.backend,
        segment=args.segment,
        overlap=args.overlap,
        batch_size=args.batch_size,
        max_upload_bytes=int(args.max_upload_mb * 1e6),
        max_seconds=args.max_seconds,
        job_ttl=args.job_ttl,
        max_queue=args.max_queue,
        example_seconds=args.example_seconds,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        import uvicorn

        from bsmamba2.web.app import create_app  # starlette: only with the web extra
    except ImportError as e:
        raise UserError(
            f"bsmamba2 serve needs the web extra ({e.name} is missing): pip install 'bsmamba2[web]'"
        ) from None
    catalog = ModelCatalog(settings.model, settings.models_dir)
    catalog.outputs(catalog.default)  # a default model that does not load fails here, before listening
    app = create_app(settings, catalog=catalog)
    if not _is_loopback(settings.host):
        log.warning("listening on %s: anyone who can reach this machine can upload songs", settings.host)
    print(f"bsmamba2 web app: http://{settings.host}:{settings.port}/  (Ctrl+C stops it)", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
