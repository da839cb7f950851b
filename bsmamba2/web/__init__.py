"""``bsmamba2 serve``: a small web app to separate songs in the browser (the ``web`` extra).

A Starlette app served by uvicorn, with one static HTML page and no third-party front-end code (nothing is
fetched from the internet at run time). Layers, each importable without the others' heavy parts:

- :mod:`~bsmamba2.web.settings`: the server's options (one frozen dataclass);
- :mod:`~bsmamba2.web.catalog`: the models a page may pick (the bundled one, ``--model``, ``--models DIR``);
- :mod:`~bsmamba2.web.jobs`: the job store (a temp folder per job, expiry) and the one worker thread that runs
  every job, in order, on one model instance;
- :mod:`~bsmamba2.web.images`: spectrogram PNGs without matplotlib;
- :mod:`~bsmamba2.web.uploads`: streaming an upload to disk under a size limit and checking it is audio;
- :mod:`~bsmamba2.web.app`: the HTTP routes; :mod:`~bsmamba2.cli.serve`: the subcommand.
"""
