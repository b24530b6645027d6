"""The `tether` command line: every typer and rich line of the project lives in this package.

`main.py` holds the root app (convert, export, run, bench, demo) and mounts the sub-apps:
`compress.py` (`tether compress …`), `federated.py` (`tether federated …`) and `cloud.py`
(`tether supernet …`).
"""

from tether.cli.main import app, main

__all__ = ["app", "main"]
