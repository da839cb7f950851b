"""The web server's options: one frozen dataclass, every default in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bsmamba2.apply import DEFAULT_OVERLAP
from bsmamba2.errors import UserError

DEFAULT_HOST = "127.0.0.1"  # localhost only unless --host says otherwise
DEFAULT_PORT = 7860  # the port Gradio demos use, so people find it where they expect
DEFAULT_MAX_UPLOAD_MB = 200.0  # a 10-minute 24-bit stereo WAV is ~150 MB
DEFAULT_MAX_SECONDS = 900.0
DEFAULT_JOB_TTL = 3600.0
DEFAULT_MAX_QUEUE = 8
DEFAULT_EXAMPLE_SECONDS = 20.0


@dataclass(frozen=True)
class WebSettings:
    """What ``bsmamba2 serve`` runs with.

    model: the default model file (None = the bundled one); models_dir: more model files to offer. The
    separation settings (device ... backend) are those of ``Separator.from_pretrained``. max_upload_bytes /
    max_seconds: uploads larger or longer are refused; job_ttl: seconds a finished job's files are kept;
    max_queue: jobs waiting or running at once before new uploads are refused; example_seconds: length of the
    generated example song.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    model: Path | None = None
    models_dir: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    segment: float = 8.0
    overlap: float = DEFAULT_OVERLAP
    batch_size: int = 4
    backend: str = "auto"
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1e6)
    max_seconds: float = DEFAULT_MAX_SECONDS
    job_ttl: float = DEFAULT_JOB_TTL
    max_queue: int = DEFAULT_MAX_QUEUE
    example_seconds: float = DEFAULT_EXAMPLE_SECONDS

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise UserError(f"--port must be in 0..65535, got {self.port}")
        if self.max_upload_bytes <= 0:
            raise UserError("--max-upload-mb must be positive")
        for name in ("max_seconds", "job_ttl", "example_seconds", "segment"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.max_queue < 1:
            raise UserError(f"--max-queue must be at least 1, got {self.max_queue}")
        if self.models_dir is not None and not self.models_dir.is_dir():
            raise UserError(f"--models {self.models_dir}: no such folder")
