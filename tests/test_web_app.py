"""bsmamba2.web.app through Starlette's TestClient: uploads in every accepted format become jobs whose stems
equal the Python API's output, bad uploads get a one-line error (and leave nothing behind), file names cannot
reach outside a job's table, a full queue is refused, progress is the separation's own, and shutdown deletes
every upload."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import ScaleModel

pytest.importorskip("starlette")  # the web extra (a GPU machine may run the suite without it)
pytest.importorskip("PIL")
from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_web_jobs import GateModel, wait_for  # noqa: E402

from bsmamba2.api import Separator  # noqa: E402
from bsmamba2.apply import ProgressCallback  # noqa: E402
from bsmamba2.web.app import create_app  # noqa: E402
from bsmamba2.web.catalog import ModelCatalog, ModelEntry  # noqa: E402
from bsmamba2.web.settings import WebSettings  # noqa: E402

SR = 44100
SEPARATOR = {"segment": 0.1, "overlap": 0.5, "batch_size": 1}


def song_bytes(fmt: str = "WAV", seconds: float = 0.5, seed: int = 0) -> bytes:
    x = 0.3 * np.random.default_rng(seed).standard_normal((int(seconds * SR), 2)).astype(np.float32)
    if fmt == "M4A":  # AAC in MP4, through PyAV (the formats extra)
        av = pytest.importorskip("av")
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as c:
            stream = c.add_stream("aac", rate=SR, layout="stereo")
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = SR, 0
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                c.mux(packet)
        return buf.getvalue()
    buf = io.BytesIO()
    subtype = {"WAV": "FLOAT", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[fmt]
    sf.write(buf, x, SR, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.fixture
def serve(tiny_model_path: Path) -> Iterator[Callable[..., TestClient]]:
    """serve(model=ScaleModel, **settings) -> a started TestClient; every one is shut down at the end."""
    clients: list[TestClient] = []

    def start(
        model: ScaleModel | None = None, models_dir: Path | None = None, **overrides: Any
    ) -> TestClient:
        net = model if model is not None else ScaleModel((0.5,))

        def load(entry: ModelEntry, callback: ProgressCallback) -> Separator:
            return Separator(net, callback=callback, **SEPARATOR)

        settings = WebSettings(model=tiny_model_path, models_dir=models_dir, example_seconds=1.0, **overrides)
        app = create_app(settings, catalog=ModelCatalog(tiny_model_path, models_dir), load=load, warm=False)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for c in clients:
        c.__exit__(None, None, None)


def root_of(client: TestClient) -> Path:
    return client.app.state.web.store.root  # type: ignore[attr-defined]


def finish(client: TestClient, job: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job {job['id']} never finished"
        time.sleep(0.02)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


def upload(client: TestClient, data: bytes, name: str = "song.wav", **params: str) -> Any:
    return client.post("/api/jobs", params={"name": name, **params}, content=data)


# ---- the page and its config -------------------------------------------------------------------------------
def test_page_and_assets_are_served_locally(serve) -> None:
    client = serve()
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text and client.get(asset).status_code == 200
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text  # nothing fetched from the internet


def test_config_lists_the_models_and_their_outputs(serve, tiny_model_path: Path, tmp_path: Path) -> None:
    more = tmp_path / "models"
    more.mkdir()
    (more / "tiny.safetensors").write_bytes(tiny_model_path.read_bytes())  # same name, another folder
    (more / "notes.txt").write_text("not a model")
    (more / "broken.ckpt").write_bytes(b"not a checkpoint")
    cfg = serve(models_dir=more).get("/api/config").json()
    names = [m["name"] for m in cfg["models"]]
    assert names == ["tiny.safetensors", "broken.ckpt", "tiny (2).safetensors"]
    assert cfg["models"][0]["default"] and cfg["models"][0]["outputs"] == ["vocals", "instrumental"]
    assert cfg["models"][1]["outputs"] == [] and cfg["models"][1]["error"]
    assert cfg["formats"] == ["wav", "flac", "mp3"] and ".mp3" in cfg["upload_suffixes"]


# ---- jobs --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "suffix"), [("WAV", ".wav"), ("FLAC", ".flac"), ("OGG", ".ogg"), ("MP3", ".mp3"), ("M4A", ".m4a")]
)
def test_upload_gives_the_apis_stems(serve, tmp_path: Path, fmt: str, suffix: str) -> None:
    client = serve()
    data = song_bytes(fmt)
    created = upload(client, data, name=f"my song{suffix}", format="flac")
    assert created.status_code == 201, created.text
    job = finish(client, created.json())
    assert job["state"] == "done", job["message"]
    assert [s["stem"] for s in job["stems"]] == ["vocals", "instrumental"]
    assert [i["label"] for i in job["images"]] == ["mixture", "vocals"]
    src = tmp_path / f"in{suffix}"
    src.write_bytes(data)
    expected = Separator(ScaleModel((0.5,)), **SEPARATOR).separate_file(src, tmp_path / "api", format="flac")
    for s in job["stems"]:
        got = client.get(s["url"])
        assert got.status_code == 200 and got.headers["content-type"] == "audio/flac"
        ours, rate = sf.read(io.BytesIO(got.content), dtype="float32")
        theirs, rate_api = sf.read(expected[s["stem"]], dtype="float32")
        assert rate == rate_api and np.array_equal(ours, theirs)
    png = client.get(job["images"][0]["url"])
    assert png.headers["content-type"] == "image/png" and Image.open(io.BytesIO(png.content)).size[1] == 128


def test_stem_choice_and_the_example_song(serve) -> None:
    client = serve()
    job = finish(client, client.post("/api/jobs", params={"example": "1", "stems": "instrumental"}).json())
    assert job["state"] == "done" and job["name"] == "example song"
    assert [s["stem"] for s in job["stems"]] == ["instrumental"]
    assert [i["label"] for i in job["images"]] == ["mixture"]  # no vocals asked for, no vocals picture
    audio, rate = sf.read(io.BytesIO(client.get(job["stems"][0]["url"]).content))
    assert audio.shape[0] == rate * 1.0  # example_seconds=1


@pytest.mark.parametrize(
    ("data", "name", "params", "status", "message"),
    [
        (b"this is not audio at all", "bad.wav", {}, 400, "bad.wav: not a readable audio file"),
        (b"", "empty.flac", {}, 400, "empty.flac: the file is empty"),
        (
            song_bytes(seconds=1.0),
            "long.wav",
            {},
            400,
            "long.wav: 1 s long; this server takes songs up to 0.5 s",
        ),
        (b"MZ\x90\x00", "tool.exe", {}, 400, "tool.exe: not a supported file type"),
        (song_bytes(), "song.wav", {"stems": "drums"}, 400, "unknown stem(s) drums"),
        (song_bytes(), "song.wav", {"model": "../../etc/passwd"}, 400, "unknown model"),
        (song_bytes(), "song.wav", {"format": "ogg"}, 400, "unknown format"),
        (b"x" * 3000, "big.wav", {}, 413, "big.wav: larger than the 0.002 MB upload limit"),
    ],
)
def test_bad_uploads_get_one_line_errors(
    serve, data: bytes, name: str, params, status: int, message: str
) -> None:
    client = serve(max_seconds=0.5, max_upload_bytes=2000 if status == 413 else 10**8)
    reply = upload(client, data, name=name, **params)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert error.startswith(message) and "\n" not in error and str(root_of(client)) not in error
    assert not any((root_of(client) / "jobs").iterdir())  # the refused upload left nothing behind
    assert client.get("/api/config").status_code == 200  # and the server is still up


def test_size_limit_holds_without_a_content_length(serve) -> None:
    client = serve(max_upload_bytes=2000)

    def body() -> Iterator[bytes]:  # chunked transfer: the limit is enforced while reading
        for _ in range(10):
            yield b"x" * 1000

    reply = client.post("/api/jobs", params={"name": "big.wav"}, content=body())
    assert reply.status_code == 413 and "upload limit" in reply.json()["error"]


def test_file_names_cannot_leave_the_jobs_table(serve) -> None:
    client = serve()
    job = finish(client, upload(client, song_bytes()).json())
    base = f"/api/jobs/{job['id']}/files"
    assert client.get(f"{base}/vocals.wav").status_code == 200
    for name in (
        "input.wav",
        "out%2Fvocals.wav",
        "..%2F..%2Fexample%2Fexample.wav",
        "%2Fetc%2Fpasswd",
        "vocals.flac",
    ):
        reply = client.get(f"{base}/{name}")
        assert reply.status_code == 404, name
    other = job["id"][:-1] + ("1" if job["id"][-1] == "0" else "0")  # a well-formed id of no job
    for path in (f"/api/jobs/{other}/files/vocals.wav", "/api/jobs/..%2F..%2Fetc/files/passwd"):
        assert client.get(path).status_code == 404
    assert client.get("/api/jobs/nope").json() == {"error": "no such job (it may have expired)"}


def test_progress_and_queue_come_through_the_api(serve) -> None:
    model = GateModel()
    client = serve(model=model, max_queue=2)
    first = upload(client, song_bytes()).json()
    second = upload(client, song_bytes(seed=1)).json()
    assert second["state"] == "queued" and second["position"] == 1
    full = upload(client, song_bytes(seed=2))
    assert full.status_code == 503 and "busy" in full.json()["error"]

    def status(job: dict[str, Any]) -> dict[str, Any]:
        return client.get(f"/api/jobs/{job['id']}").json()

    wait_for(lambda: status(first)["state"] == "running", "the first job to start")
    model.permits.release()
    wait_for(lambda: status(first)["processed"] == 1, "one chunk's progress")
    now = status(first)
    assert now["total"] > 2 and "stems" not in now
    model.permits.release(1000)
    assert finish(client, first)["state"] == "done" and finish(client, second)["state"] == "done"


def test_shutdown_deletes_every_upload(serve) -> None:
    client = serve()
    job = finish(client, upload(client, song_bytes()).json())
    root = root_of(client)
    assert (root / "jobs" / job["id"] / "input.wav").is_file()
    client.__exit__(None, None, None)
    assert not root.exists()
