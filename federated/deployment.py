"""Run a :class:`~tether.federated.apps.FedConfig` on a running Flower SuperLink.

:func:`deploy` does what an operator does by hand (``federated/README.md``, "Across
machines"): it writes a Flower app folder whose ``pyproject.toml`` names
``tether.federated.apps:server_app`` / ``:client_app`` and carries every FedConfig field as
the app's run config, points a throwaway ``FLWR_HOME`` at the SuperLink, submits the run with
``flwr run --stream`` (which returns when the run has ended) and reads the
:class:`~tether.federated.apps.RunReport` the ServerApp wrote to ``cfg.out``.

Where things run: the ServerApp runs on the SuperLink's host, so ``cfg.init``, ``cfg.final``
and ``cfg.out`` are paths there, and the report comes back only when that host shares this
one's file system (same machine, or a shared folder). Each SuperNode runs the ClientApp on
partition ``partition-id`` of ``cfg.dataset`` as its own machine has it; ``cfg.clients`` must
equal the number of SuperNodes (the strategy waits for that many). ``tether`` must be installed
wherever a SuperLink or SuperNode runs the apps (the app declares no dependencies; start the
SuperLink with ``--disable-runtime-dependency-installation`` where there is no network).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tether.federated.apps import FedConfig, RunReport

__all__ = ["app_pyproject", "deploy"]

_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "tetherfed"
version = "1.0.0"
description = "tether federated run"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "tether"

[tool.flwr.app.components]
serverapp = "tether.federated.apps:server_app"
clientapp = "tether.federated.apps:client_app"

[tool.flwr.app.config]
"""


def _toml_value(v: object) -> str:
    """A run-config value as TOML (str, int, float, bool only).

    >>> [_toml_value(v) for v in (True, 3, 0.1, float("inf"), 'a"b')]
    ['true', '3', '0.1', 'inf', '"a\\\\"b"']
    """
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON's escapes are valid in a TOML basic string
    raise TypeError(f"run config values are str, int, float or bool. Received: {v!r}")


def app_pyproject(cfg: FedConfig) -> str:
    """The ``pyproject.toml`` of a Flower app running ``cfg`` (every field in the run config)."""
    rc = cfg.to_run_config()
    return _PYPROJECT + "".join(f"{k} = {_toml_value(rc[k])}\n" for k in rc)


def _flwr() -> str:
    beside = Path(sys.executable).parent / "flwr"
    found = str(beside) if beside.exists() else shutil.which("flwr")
    if found is None:
        from tether.errors import TetherError

        raise TetherError("deploy: the `flwr` command is not installed (pip install flwr)")
    return found


def deploy(cfg: FedConfig, superlink: str, root_certificates: str | os.PathLike[str] | None = None,
           timeout: float = 3600.0) -> RunReport:
    """Run ``cfg`` on the SuperLink at ``superlink`` and return the ServerApp's report.

    Args:
        cfg: The run. Its ``init`` / ``final`` / ``out`` are paths on the SuperLink's host;
            ``out`` "" means a temporary file here (the hosts must share it).
        superlink: ``HOST:PORT`` of the SuperLink's Control API (``flower-superlink``'s
            ``--port``, default 8000 on Flower 1.42).
        root_certificates: The CA certificate (PEM) the SuperLink's TLS certificate chains
            to; None (default) connects without TLS (a SuperLink started with ``--insecure``).
        timeout: Seconds to wait for the run to end (default 3600).

    Returns:
        The :class:`~tether.federated.apps.RunReport` the ServerApp wrote to ``cfg.out``.

    Raises:
        TetherError: ``flwr run`` failed or timed out, or the run ended without writing the
            report (the ServerApp raised, or ``cfg.out`` is not on a file system both hosts
            see); the message carries the tail of the run's log.
    """
    from tether.errors import TetherError

    with tempfile.TemporaryDirectory(prefix="tether-deploy-") as tmp:
        work = Path(tmp)
        out = Path(cfg.out) if cfg.out else work / "report.json"
        paths = {name: str(Path(v).resolve()) for name in ("init", "final")
                 if (v := getattr(cfg, name))}
        run_cfg = replace(cfg, out=str(out.resolve()), **paths)
        app, home = work / "app", work / "home"
        app.mkdir()
        home.mkdir()
        (app / "pyproject.toml").write_text(app_pyproject(run_cfg))
        tls = (f"root-certificates = {_toml_value(str(Path(root_certificates).resolve()))}\n"
               if root_certificates is not None else "insecure = true\n")
        (home / "config.toml").write_text(f'[superlink]\ndefault = "tether"\n\n[superlink.tether]\n'
                                          f"address = {_toml_value(superlink)}\n{tls}")
        env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
               "FLWR_DISABLE_UPDATE_CHECK": "1"}
        before = _version(out)
        try:
            run = subprocess.run([_flwr(), "run", str(app), "tether", "--stream"], env=env,
                                 cwd=app, capture_output=True, text=True, timeout=timeout,
                                 check=False)
        except subprocess.TimeoutExpired as exc:
            raise TetherError(f"deploy: the run on the SuperLink at {superlink} did not end "
                              f"within {timeout:g} s") from exc
        log = (run.stdout + run.stderr)[-4000:]
        if run.returncode != 0:
            raise TetherError(f"deploy: `flwr run` against the SuperLink at {superlink} failed "
                              f"(exit {run.returncode}):\n{log}")
        deadline = time.time() + 30  # the log stream can end a moment before the file lands
        while _version(out) == before and time.time() < deadline:
            time.sleep(0.5)
        if _version(out) == before:
            raise TetherError(f"deploy: the run on the SuperLink at {superlink} ended without "
                              f"writing its report to {out} (the ServerApp failed, or that path "
                              f"is not on a file system the SuperLink's host shares); its log:\n"
                              f"{log}")
        return RunReport(**json.loads(out.read_text()))


def _version(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns)
