"""The HTTP side: one static page and a small JSON API over the job store and the worker.

    GET  /                                  the page (static/index.html; its script and style under /static)
    GET  /api/config                        models on offer (with their outputs), formats, upload limits
    POST /api/jobs?name=&model=&stems=&format=   the raw file as the request body -> 201 {job}
    POST /api/jobs?example=1&model=&stems=&format=   the bundled example song instead of an upload
    GET  /api/jobs/{id}                     {state, processed, total, position, message, stems, images}
    GET  /api/jobs/{id}/files/{name}        a stem (vocals.wav, ...) or a spectrogram (mixture.png, ...)

Errors come back as ``{"error": one line}`` with a 4xx status (5xx for a busy or broken server), never a
traceback. A file is served only if its name is in the job's own table (:class:`bsmamba2.web.jobs.Job`),
so no request can name a path.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bsmamba2.api import FORMATS, Separator
from bsmamba2.apply import ProgressCallback
from bsmamba2.errors import UserError
from bsmamba2.web.catalog import ModelCatalog, ModelEntry
from bsmamba2.web.jobs import DONE, Job, JobStore, Loader, QueueFull, Worker
from bsmamba2.web.settings import WebSettings
from bsmamba2.web.uploads import (
    EXAMPLE_NAME,
    UPLOAD_SUFFIXES,
    ExampleSong,
    TooLarge,
    UploadError,
    check_audio,
    receive,
    upload_suffix,
)

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".png": "image/png"}
IMAGE_LABELS = ("mixture", "vocals")


@dataclass
class WebState:
    """What the routes share while the server runs: settings, models, the job store, the worker."""

    settings: WebSettings
    catalog: ModelCatalog
    store: JobStore
    worker: Worker
    example: ExampleSong

    @classmethod
    def start(
        cls, settings: WebSettings, catalog: ModelCatalog, load: Loader, *, warm: bool = True
    ) -> WebState:
        """Make the temp root (``bsmamba2-web-*`` under the system temp folder) and start the worker."""
        root = Path(tempfile.mkdtemp(prefix="bsmamba2-web-"))
        store = JobStore(root, ttl=settings.job_ttl, max_active=settings.max_queue)
        worker = Worker(store, catalog, load)
        worker.start(warm=warm)
        log.info("uploads and outputs go to %s (deleted at shutdown)", root)
        return cls(settings, catalog, store, worker, ExampleSong(root / "example", settings.example_seconds))

    def close(self) -> None:
        self.worker.stop()
        self.store.close()
        log.info("stopped; removed its temp folder %s", self.store.root)


def separator_loader(settings: WebSettings) -> Loader:
    """Load a catalogue model as a ``Separator`` with the server's device and chunk settings."""

    def load(entry: ModelEntry, callback: ProgressCallback) -> Separator:
        return Separator.from_pretrained(
            entry.path,
            device=settings.device,
            precision=settings.precision,
            segment=settings.segment,
            overlap=settings.overlap,
            batch_size=settings.batch_size,
            backend=settings.backend,
            callback=callback,
        )

    return load


def create_app(
    settings: WebSettings,
    *,
    catalog: ModelCatalog | None = None,
    load: Loader | None = None,
    warm: bool = True,
) -> Starlette:
    """The app; its lifespan starts the worker and, at shutdown, stops it and deletes every upload.

    catalog / load: defaults from ``settings`` (tests pass stand-ins); warm: load the default model at start.
    """
    catalog = catalog or ModelCatalog(settings.model, settings.models_dir)
    loader = load or separator_loader(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.web = WebState.start(settings, catalog, loader, warm=warm)
        try:
            yield
        finally:
            app.state.web.close()

    routes = [
        Route("/", index),
        Route("/api/config", config),
        Route("/api/jobs", create_job, methods=["POST"]),
        Route("/api/jobs/{job_id}", job_status),
        Route("/api/jobs/{job_id}/files/{name}", job_file),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers: dict[Any, Any] = {UserError: user_error, HTTPException: http_error, Exception: server_error}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)


# ---- routes ------------------------------------------------------------------------------------------------
async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def config(request: Request) -> Response:
    web: WebState = request.app.state.web
    s = web.settings
    models = await run_in_threadpool(web.catalog.describe)  # reads each model file's config once
    return JSONResponse(
        {
            "models": models,
            "formats": list(FORMATS),
            "upload_suffixes": list(UPLOAD_SUFFIXES),
            "max_upload_bytes": s.max_upload_bytes,
            "max_seconds": s.max_seconds,
            "example_seconds": s.example_seconds,
        }
    )


async def create_job(request: Request) -> Response:
    """Check the choices, take the upload (or the example), queue the job; 201 with its status."""
    web: WebState = request.app.state.web
    q = request.query_params
    model = web.catalog.get(q.get("model")).name
    outputs = await run_in_threadpool(web.catalog.outputs, model)
    stems = choose_stems(q.get("stems"), outputs)
    fmt = q.get("format") or "wav"
    if fmt not in FORMATS:
        raise UploadError(f"unknown format {fmt!r} (choose {', '.join(FORMATS)})")
    if q.get("example") == "1":
        name = EXAMPLE_NAME
        source = await run_in_threadpool(web.example.get)
        job_id, folder = web.store.reserve()
    else:
        name = display_name(q.get("name", ""))
        suffix = upload_suffix(name)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > web.settings.max_upload_bytes:
            raise TooLarge(f"{name}: larger than the {web.settings.max_upload_bytes / 1e6:g} MB upload limit")
        job_id, folder = web.store.reserve()
        source = folder / f"input{suffix}"
        try:
            await receive(request.stream(), source, limit=web.settings.max_upload_bytes, name=name)
            await run_in_threadpool(check_audio, source, name=name, max_seconds=web.settings.max_seconds)
        except BaseException:
            web.store.release(folder, remove=True)
            raise
    job = Job(job_id, folder, source, name, model, stems, fmt, created=web.store.clock())
    web.worker.submit(job)
    web.store.release(folder, remove=False)
    return JSONResponse(status_view(web.store, job), status_code=201)


async def job_status(request: Request) -> Response:
    web: WebState = request.app.state.web
    job = web.store.get(request.path_params["job_id"])
    if job is None:
        return JSONResponse({"error": "no such job (it may have expired)"}, status_code=404)
    return JSONResponse(status_view(web.store, job))


async def job_file(request: Request) -> Response:
    web: WebState = request.app.state.web
    job = web.store.get(request.path_params["job_id"])
    path = job.files.get(request.path_params["name"]) if job is not None else None
    if path is None or not path.is_file():
        return JSONResponse({"error": "no such file"}, status_code=404)
    return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"))


# ---- helpers -----------------------------------------------------------------------------------------------
def choose_stems(requested: str | None, outputs: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated stem list checked against the model's outputs (none = all), in the model's order."""
    names = [s for s in (requested or "").split(",") if s]
    if not names:
        return outputs
    bad = [s for s in names if s not in outputs]
    if bad:
        raise UploadError(f"unknown stem(s) {', '.join(bad)}; this model gives {', '.join(outputs)}")
    return tuple(s for s in outputs if s in names)


def display_name(name: str) -> str:
    """The uploaded file's base name, printable and at most 120 characters (it is shown, never opened)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(c for c in base if unicodedata.category(c)[0] != "C")
    return clean[-120:]


def status_view(store: JobStore, job: Job) -> dict[str, Any]:
    """The job as the page sees it; the stem and image URLs only once it is done."""
    with store.lock:
        view: dict[str, Any] = {
            "id": job.id,
            "state": job.state,
            "name": job.name,
            "model": job.model,
            "format": job.format,
            "processed": job.processed,
            "total": job.total,
            "position": store.position(job),
            "message": job.message,
            "seconds": None if job.started is None else (job.finished or store.clock()) - job.started,
        }
        if job.state == DONE:
            base = f"/api/jobs/{job.id}/files"
            view["stems"] = [
                {"stem": s, "file": f"{s}.{job.format}", "url": f"{base}/{s}.{job.format}"} for s in job.stems
            ]
            view["images"] = [
                {"label": k, "url": f"{base}/{k}.png"} for k in IMAGE_LABELS if f"{k}.png" in job.files
            ]
        return view


async def user_error(request: Request, exc: Exception) -> Response:
    status = 503 if isinstance(exc, QueueFull) else getattr(exc, "status", 400)
    return JSONResponse({"error": str(exc)}, status_code=status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def server_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal server error (the server log has the details)"}, status_code=500)
