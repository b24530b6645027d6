"""`run(config)`: the whole road, stage after stage, then the report.

Which stages run follows the config: `model.source = "supernet"` trains one and builds the
library, `"library"` reuses a library, `"file"` skips the cloud half; the learning patterns
listed in `learn.patterns` run on the deployed model. The summary that the report draws is
made only of what the stages recorded.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tether.pipeline.config import PipelineConfig
from tether.pipeline.stages import PipelineError, Progress, Road
from tether.pipeline.store import StageRecord

__all__ = ["RunResult", "run", "ARTIFACTS"]

logger = logging.getLogger(__name__)

# stage -> (file in its folder, name under out_dir)
ARTIFACTS = {"convert": ("model.tmodel", "model.tmodel"),
             "transfer": ("transfer.tmodel", "transfer.tmodel"),
             "federated": ("federated.tmodel", "federated.tmodel")}


@dataclass
class RunResult:
    """What a run made.

    Attributes:
        stages: every stage of this run, in order (cached or run now).
        summary: what the stages measured, as the report shows it (`summary.json`).
        report: the HTML report's path.
        out_dir: the run's folder.
        seconds: wall time of this run.
    """

    stages: list[StageRecord] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    report: Optional[Path] = None
    out_dir: Path = Path(".")
    seconds: float = 0.0

    def stage(self, name: str) -> Optional[StageRecord]:
        """This run's record of stage `name`, or None when it did not run."""
        return next((r for r in self.stages if r.name == name), None)


def run(config: PipelineConfig, progress: Optional[Progress] = None) -> RunResult:
    """Runs every stage `config` asks for (reusing cached ones), writes the deployed model
    and the learnt ones, `summary.json` and `report.html` into `config.run.out_dir`."""
    t0 = time.perf_counter()
    out = Path(config.run.out_dir)
    if out.exists() and not out.is_dir():
        raise PipelineError(f"run.out_dir: {out} is a file; give the folder the run writes to")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f"run.out_dir: another run is using {out}; wait for it or "
                                "give this one its own folder") from None
        return _run(config, progress, out, t0)


def _run(config: PipelineConfig, progress: Optional[Progress], out: Path,
         t0: float) -> RunResult:
    road = Road(config, progress)
    recs: dict[str, StageRecord] = {}
    recs["data"] = road.data()
    src = config.model.source
    model_rec = None
    if src in ("supernet", "library"):
        if src == "supernet":
            recs["supernet"] = road.supernet(recs["data"])
            recs["library"] = road.library(recs["data"], recs["supernet"])
        else:
            recs["library"] = road.given_library()
        recs["device"] = road.device(recs["library"])
        recs["search"] = model_rec = road.search(recs["library"], recs["device"])
    recs["compress"] = road.compress(recs["data"], model_rec)
    recs["convert"] = road.convert(recs["compress"])
    for pattern in config.learn.patterns:
        recs[pattern] = getattr(road, pattern)(recs["data"], recs["compress"], recs["convert"])
    from tether._internal.files import atomic_path, atomic_write_text
    from tether.pipeline.report import write_report

    for stage, (name, target) in ARTIFACTS.items():
        if stage in recs:
            with atomic_path(out / target) as tmp:
                shutil.copyfile(recs[stage].path(name), tmp)
    summary = make_summary(config, road.records)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str))
    report = write_report(summary, out / "report.html")
    road.store.log_run(road.records, config=str(config.run.title))
    return RunResult(road.records, summary, report, out, time.perf_counter() - t0)


def _fmt_ms(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.4f} ms"


def make_summary(config: PipelineConfig, records: list[StageRecord]) -> dict[str, Any]:
    """The report's content: each section copied from the stage that measured it."""
    r = {rec.name: rec.report for rec in records}
    s: dict[str, Any] = {
        "title": config.run.title,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": config.to_dict(),
        "stages": [{"name": rec.name, "cached": rec.cached, "seconds": rec.seconds,
                    "key": rec.key} for rec in records],
    }
    d = r["data"]
    s["scenario"] = {"task": config.scenario.task, "dataset": d["dataset"],
                     "classes": d["classes"], "holdout_classes": d["holdout_classes"],
                     "train_images": d["train_images"], "test_images": d["test_images"]}
    rows: list[dict[str, str]] = []
    if "search" in r:
        se = r["search"]
        ch = se["chosen"]
        s["library"] = {"device": se["device"], "entries": se["entries"], "chosen": ch["key"]}
        s["search"] = {"policy": se["policy"], "constraints": se["constraints"],
                       "history": [{"generation": i, **h} for i, h in enumerate(se["history"])],
                       "chosen": ch, "samples": se["samples"]}
        limits = ", ".join(f"{k} {v}" for k, v in se["constraints"].items()
                           if v is not None and k != "device") or "none"
        rows.append({"what": "model", "value": f"{ch['key']} ({ch['source']})",
                     "why": f"best under policy '{se['policy']}' with limits: {limits}; "
                     f"{se['samples']:,} subnets searched, latency "
                     f"{_fmt_ms(ch['latency_ms'])} on {se['device']}"
                     + (" (measured)" if ch.get("verified") else " (predicted)")})
    else:
        rows.append({"what": "model", "value": config.model.path,
                     "why": "brought by the user (model.source = \"file\"): no search"})
    comp = r["compress"]
    s["compression"] = {"steps": comp["steps"]}
    first, last = comp["steps"][0], comp["steps"][-1]
    rows.append({"what": "compression", "value": " → ".join(st["name"] for st in comp["steps"]),
                 "why": f"accuracy {first['accuracy']:.4f} → {last['accuracy']:.4f}, "
                 f"{first['bytes']:,} → {last['bytes']:,} bytes, "
                 f"{_fmt_ms(first['latency_ms'])} → {_fmt_ms(last['latency_ms'])} in tether"})
    conv = r["convert"]
    rows.append({"what": "deployed model", "value": f"model.tmodel ({conv['bytes']:,} bytes, "
                 f"{conv['precision']})", "why": "the last compression step, converted"})
    if "inference" in r:
        inf = r["inference"]
        s["inference"] = {"threads": inf["threads"], "engines": inf["engines"]}
        rows.append({"what": "inference", "value": ", ".join(
            f"{e['engine']} {e['median_ms']:.4f} ms" for e in inf["engines"]),
            "why": f"median single-image latency at {inf['threads']} thread(s); accuracy "
            + ", ".join(f"{e['engine']} {e['accuracy']:.4f}" for e in inf["engines"])})
    if "transfer" in r:
        tr = r["transfer"]
        s["transfer"] = {k: tr[k] for k in ("old_classes", "new_classes", "epochs", "before",
                                            "after")}
        new = tr["after"]["new_accuracy"]
        rows.append({"what": "transfer learning", "value": "transfer.tmodel",
                     "why": f"head retrained in the engine on {tr['device_images']} device "
                     f"images: old classes {tr['before']['old_accuracy']:.4f} → "
                     f"{tr['after']['old_accuracy']:.4f}"
                     + (f", new classes → {new:.4f}" if new is not None else "")})
    if "federated" in r:
        fe = r["federated"]
        s["federated"] = {k: fe[k] for k in ("codec", "secagg", "dp_clip", "clients",
                                             "rounds")}
        rows.append({"what": "federated learning", "value": "federated.tmodel",
                     "why": f"{fe['clients']} devices, {len(fe['rounds'])} rounds, codec "
                     f"{fe['codec']}{', secure aggregation' if fe['secagg'] else ''}: "
                     f"accuracy {fe['accuracy']:.4f}, {fe['uplink_bytes']:,} bytes sent up"})
    s["summary"] = rows
    return s
