"""``tether federated ...``: a Typer sub-app (registered by tether/cli/main.py).

Imports only typer and the standard library at module level; Flower and numpy load when a
command runs.
"""

from __future__ import annotations

import json
import os
import re

import click
import typer

from tether.cli._common import fail

# Fixed-choice values as tether.federated.apps spells them (a test keeps them equal).
PARTITIONS = ("iid", "noniid")
MODELS = ("cnn", "cnn-mcmahan", "mlp")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Federated learning on Flower: FedAvg, codecs, secure aggregation, DP.")


@app.callback()
def _group() -> None:
    """Federated learning on Flower (keeps `simulate` a sub-command even when run standalone)."""


@app.command()
def simulate(
    clients: int = typer.Option(100, "--clients", min=1, help="Number of simulated clients N"),
    rounds: int = typer.Option(10, "--rounds", min=1, help="Federated rounds R"),
    codec: str = typer.Option("none", "--codec", help="Uplink codec: none, qsgd:4, terngrad, "
                              "signsgd, topk:0.01, mask:0.1, lowrank:4 (+ef for error feedback)"),
    downlink: str = typer.Option("", "--downlink", help="Downlink codec spec (default: none)"),
    secagg: bool = typer.Option(False, "--secagg", help="Secure aggregation (4-bit shared grid)"),
    dropout: float = typer.Option(0.0, "--dropout", min=0.0, max=0.99,
                                  help="Probability a sampled client drops (after key sharing with --secagg)"),
    partition: str = typer.Option("noniid", "--partition", click_type=click.Choice(PARTITIONS),
                                  help="iid, or noniid (2 label shards per client)"),
    fraction: float = typer.Option(0.1, "--fraction", help="C: share of clients sampled per round"),
    epochs: int = typer.Option(5, "--epochs", help="E local epochs"),
    batch_size: int = typer.Option(10, "--batch-size", help="B; 0 = full batch (FedSGD)"),
    lr: float = typer.Option(0.1, "--lr", help="Client learning rate eta_0"),
    lr_decay: float = typer.Option(1.0, "--lr-decay", help="Round t uses eta_0 * lr_decay^(t-1) (1 = constant)"),
    dataset: str = typer.Option("mnist5k", "--dataset", help="Built-in dataset"),
    model: str = typer.Option("cnn", "--model", click_type=click.Choice(MODELS),
                              help="cnn (conv-pool-conv-pool-dense, 105k parameters), "
                              "cnn-mcmahan (McMahan et al.'s CNN, 1.66M) or mlp"),
    hidden: int = typer.Option(200, "--hidden", help="MLP hidden units (0 = softmax regression)"),
    trainer: str = typer.Option("numpy", "--trainer", click_type=click.Choice(["numpy", "engine"]),
                                help="Local training in numpy, or in the C engine's trainer "
                                "(the code a phone runs; --model mlp)"),
    secagg_weighted: bool = typer.Option(True, "--secagg-weighted/--secagg-unweighted",
                                         help="n_k/n weights under secure aggregation"),
    dp_clip: float = typer.Option(0.0, "--dp-clip", help="Client-level DP clip C (0 = off)"),
    dp_noise: float = typer.Option(1.0, "--dp-noise", help="DP noise multiplier z"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
    cpus: int | None = typer.Option(None, "--cpus", help="Ray actors (default: all cores)"),
    local: bool = typer.Option(False, "--local", help="Run in this process on a LocalGrid (no Ray): "
                               "same strategy and ClientApp, clients one after the other"),
) -> None:
    """Run a federated simulation on Flower's Simulation Engine (Ray backend) or in process."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    from dataclasses import asdict

    from tether.federated.apps import FedConfig
    from tether.federated.apps import RunReport
    from tether.federated.apps import simulate as ray_run

    def run(c: FedConfig, num_cpus: int | None) -> RunReport:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        where = "in process" if local else "on Flower's Simulation Engine"
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"{c.clients} clients {where}: starting", total=c.rounds)

            def on_round(rnd: int, acc: float | None) -> None:
                text = f"round {rnd}" + (f", test accuracy {acc:.4f}" if acc is not None else "")
                bar.update(task, completed=rnd, description=text)

            if local:
                from tether.federated.local import run_local

                return run_local(c, on_round=on_round)
            return ray_run(c, num_cpus=num_cpus, on_round=on_round, worker_logs=verbose())

    try:
        cfg = FedConfig(dataset=dataset, clients=clients, partition=partition, fraction=fraction,
                        rounds=rounds, epochs=epochs, batch_size=batch_size, lr=lr, lr_decay=lr_decay, codec=codec,
                        downlink=downlink, secagg=secagg, dropout=dropout, dp_clip=dp_clip,
                        dp_noise=dp_noise, seed=seed, model=model, hidden=hidden,
                        secagg_weighted=secagg_weighted, trainer=trainer)
    except ValueError as exc:
        # FedConfig names its fields; the user typed flags.
        text = re.sub(r"FedConfig\.(\w+)", lambda m: "--" + m.group(1).replace("_", "-"),
                      str(exc))
        fail(text, 2)
    # Flower's Ray transport imports TensorFlow; its logger is set up when flwr loads. The
    # progress bar says what happens; TETHER_VERBOSE=1 shows the runtimes' own lines.
    from tether._internal.quiet import native_stderr_quiet, quiet_loggers, verbose

    with native_stderr_quiet():
        import flwr.simulation  # noqa: F401
        if not local:
            import flwr.simulation.ray_transport  # noqa: F401  (pulls in TensorFlow)
    quiet_loggers()
    if as_json:
        rep = run(cfg, num_cpus=cpus)
        typer.echo(json.dumps(asdict(rep)))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rep = run(cfg, num_cpus=cpus)
    table = Table("round", "accuracy", "uplink bytes", "downlink bytes", "clients")
    for r in rep.rounds:
        table.add_row(str(int(r["round"])), f"{r['accuracy']:.4f}", str(int(r["uplink_bytes"])),
                      str(int(r["downlink_bytes"])), str(int(r["clients"])))
    console.print(table)
    console.print(f"wall {rep.wall_s:.1f} s")
