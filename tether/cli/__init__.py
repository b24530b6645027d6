"""The `tether` command line: every typer and rich line of the project lives in this package.

`main.py` holds the root app (convert, export, run, bench, demo) and mounts the sub-apps:
`compress.py` (`tether compress …`), `federated.py` (`tether federated …`), `cloud.py`
(`tether supernet …`, `device`, `library`, `search`), `transfer.py` (`tether transfer …`) and
`pipeline.py` (`tether pipeline …` and `tether demo`).
"""

from tether.cli.main import app, main

__all__ = ["app", "main"]
