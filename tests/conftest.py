"""Shared pytest set-up: quiet TensorFlow, a derandomized Hypothesis profile for CI."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", deadline=None, derandomize=True, max_examples=100)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


# ----- tests that run in a fresh interpreter ---------------------------------------------
#
# Ray starts its raylet with fork + exec; forked from this long-lived process (TensorFlow's,
# gRPC's and Flower's threads running) the child can block before exec and the test waits
# forever (seen twice in `make test`). A test marked `isolated` runs alone in a new pytest
# process instead, with a time limit, so a hang fails that test and nothing else. A Ray
# simulation can also stall once started (seen once: the actors idle, the driver spinning,
# on a loaded machine; the same test takes 25 s alone), so `retries=N` runs a test that ran
# out of time again in a fresh process, up to N more times; a failure is never retried.

ISOLATED_ENV = "TETHER_ISOLATED_TEST"


def pytest_pyfunc_call(pyfuncitem):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    import pytest

    marker = pyfuncitem.get_closest_marker("isolated")
    if marker is None or os.environ.get(ISOLATED_ENV) == "1":
        return None
    timeout = int(marker.kwargs.get("timeout", 600))
    tries = 1 + int(marker.kwargs.get("retries", 0))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", pyfuncitem.nodeid]
    for attempt in range(1, tries + 1):
        try:
            run = subprocess.run(cmd, cwd=str(pyfuncitem.config.rootpath), capture_output=True,
                                 text=True, timeout=timeout,
                                 env={**os.environ, ISOLATED_ENV: "1"})
            break
        except subprocess.TimeoutExpired:
            if attempt == tries:
                pytest.fail(f"{pyfuncitem.nodeid} did not finish in {timeout} s in its own "
                            f"process ({tries} tries)", pytrace=False)
    if run.returncode != 0:
        pytest.fail(f"{pyfuncitem.nodeid} failed in its own process:\n{run.stdout[-6000:]}\n"
                    f"{run.stderr[-2000:]}", pytrace=False)
    return True
