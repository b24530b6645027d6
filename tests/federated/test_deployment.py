"""Real flower-superlink + three flower-supernode processes on loopback, over TLS (a CA and a
server certificate for 127.0.0.1 made here with `cryptography`); two rounds of FedAvg under
secure aggregation (4-bit shared stochastic-quantization grid, n_k-weighted), one of three
clients (33%) dropping after key sharing every round; the clients train the numpy CNN. The run
is submitted by `tether.federated.deployment.deploy` (an app folder, `flwr run --stream`, the
ServerApp's report). Takes ~2-4 minutes (each message starts a ClientApp process)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"flower-superlink did not listen on 127.0.0.1:{port} within {timeout} s")


def _write_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, server.pem, server.key): a throwaway CA and a server certificate it signs for
    127.0.0.1 / localhost, as an operator would make with openssl (see federated/README.md)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tether test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(start)
              .not_valid_after(end)
              .add_extension(x509.SubjectAlternativeName(
                  [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                  critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.crt", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.skipif(not (BIN / "flower-superlink").exists(), reason="flower-superlink not installed")
def test_superlink_three_supernodes_secagg_with_dropout(tmp_path: Path) -> None:
    import numpy as np
    from tether.federated.apps import FedConfig, init_model, read_arrays
    from tether.federated.deployment import deploy

    out = tmp_path / "report.json"
    home = tmp_path / "home"
    home.mkdir()
    port = _free_port()
    ca, cert, key = _write_tls_files(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_HOME": str(home)}
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        log = open(tmp_path / "superlink.log", "w")  # noqa: SIM115 (closed in finally)
        logs.append(log)
        procs.append(subprocess.Popen(
            [str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert),
             "--ssl-keyfile", str(key), "--disable-runtime-dependency-installation",
             "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT))
        _wait_for_port(port, 120)  # a loaded machine can take far longer than a fixed sleep
        for i in range(3):
            log = open(tmp_path / f"supernode{i}.log", "w")  # noqa: SIM115
            logs.append(log)
            procs.append(subprocess.Popen(
                [str(BIN / "flower-supernode"), "--root-certificates", str(ca),
                 "--superlink", f"127.0.0.1:{port}",
                 "--port", str(_free_port()), "--node-config", f"partition-id={i} num-partitions=3"],
                env=env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(10)
        # the ServerApp starts from FedConfig.init and writes FedConfig.final on the SuperLink's
        # host; the SuperNodes' ClientApps ignore both paths
        start = init_model(FedConfig(), np.zeros((1, 784), np.float32), 10)
        np.savez(tmp_path / "init.npz", *start)
        cfg = FedConfig(clients=3, rounds=2, fraction=1.0, partition="iid", secagg=True, epochs=1,
                        drop="2", out=str(out), init=str(tmp_path / "init.npz"),
                        final=str(tmp_path / "final.npz"))
        rep = deploy(cfg, f"127.0.0.1:{port}", root_certificates=ca, timeout=600)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()
        shutil.rmtree(home / "apps", ignore_errors=True)
    assert out.exists()  # the ServerApp's own report file, which deploy read
    assert rep.final_arrays == str(tmp_path / "final.npz")
    assert [a.shape for a in read_arrays(rep.final_arrays)] == [a.shape for a in start]
    rounds = rep.rounds
    assert [r["round"] for r in rounds] == [1, 2]
    # the unmasked count coordinate equals |U3| (SecAggFedAvg aborts otherwise): masks cancelled
    assert all(r["clients"] == 2 and r["dropped"] == 1 for r in rounds)
    # n_k-weighted: the unmasked weight coordinate is the survivors' (partitions 0 and 1) n_k
    from tether.federated.partition import iid

    sizes = [len(p) for p in iid(4000, 3, seed=0)]  # mnist5k: 4000 training images
    assert all(r["weight_sum"] == sizes[0] + sizes[1] for r in rounds), rounds
    assert rounds[-1]["accuracy"] > 0.6  # from 0.115 at init
