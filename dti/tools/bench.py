"""Benchmarks as commands (not tests):

    python -m dti.bench train   model=sdxl model.random_init=true train.batch_size=4 train.resolution=768
    python -m dti.bench sample  model=sdxl model.random_init=true sampler.batch_size=16
    python -m dti.bench concept model=sdxl model.random_init=true
    python -m dti.bench train   model=sdxl model.random_init=true pack=4         # 4 concepts per step
    python -m dti.bench concept model=sdxl model.random_init=true pack=4         # 4 concepts, packed
    python -m dti.bench concept model=sdxl model.random_init=true bench.concepts=4     # 4 concepts, one by one

Hydra overrides as for launch.py, plus the `bench:` node (conf/bench.yaml: `bench.warmup`, `bench.steps`,
`bench.out`, `bench.profile`, `bench.concepts`). `model.random_init=true` builds
the real architecture with random weights from the configs in dti/offline/archs/ (published facts), saved once into the
cache and loaded through the ordinary adapter, so no hub access is needed. Without CUDA the tiny backbone of the
same family runs instead: the command is exercised in CI, the figures mean nothing. Prints and writes JSON:
device, versions, median/p10/p90 step time (CUDA events after warm-up), peak memory, FLOPs per step
(torch.utils.flop_counter) and the fraction of the device's peak, images per second, and for `concept` the wall
time from process start to embeddings written.
"""

from __future__ import annotations

import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PROCESS_START = time.perf_counter()
PROCESS_START_WALL = time.time()

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from dti.core import io  # noqa: E402
from dti.core.errors import InputError  # noqa: E402
from dti.run.build import (  # noqa: E402
    BackboneCache,
    build_adapter,
    build_adapter_settings,
    build_backbone,
    build_concept,
    build_subject,
    build_trainer,
)
from dti.run.cli import quiet_libraries  # noqa: E402
from dti.run.job import JobContext  # noqa: E402
from dti.run.job import run as run_stages  # noqa: E402
from dti.run.packing import PackItem, packed_trainers  # noqa: E402
from dti.run.precheck import compose_checked  # noqa: E402
from dti.run.schema import LaunchConfig, register_schema  # noqa: E402
from dti.run.validate import validate_config  # noqa: E402
from dti.sweep.packing import pack_sweep  # noqa: E402
from dti.train.packed import PackedTrainer  # noqa: E402

# dense bf16 peak of the chips we run on, for the "fraction of peak" figure
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "RTX 4090": 165e12}
TINY = {"sdxl": "tiny_sdxl", "sana_1.6b": "tiny_sana", "sana_4.8b": "tiny_sana", "wan_1.3b": "tiny_wan",
        "sd15": "tiny_sd15", "sd21_base": "tiny_sd21"}


@dataclass
class BenchSettings:
    warmup: int = 3
    steps: int = 10
    out: str | None = None
    profile: bool = False
    concepts: int | None = None


@dataclass
class BenchConfig(LaunchConfig):
    """The benchmark command's schema: launch.yaml's, plus `bench:`."""

    bench: BenchSettings = field(default_factory=BenchSettings)


def prepare_overrides(overrides: list[str]) -> list[str]:
    """On CPU swap in the tiny backbone of the family (random weights of the real size need CUDA to be timed);
    benchmarks train on the synthetic subject without logging."""
    model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "sdxl")
    if not torch.cuda.is_available() and model in TINY:
        overrides = [o for o in overrides if not o.startswith(("model=", "model.random_init="))]
        overrides.append(f"model={TINY[model]}")
    return [*overrides, "data=synthetic", "stage=[train]", "logger=none"]


def timer():
    """(start, stop) -> seconds, with CUDA events on CUDA (no host sync inside the measured region)."""
    if torch.cuda.is_available():
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def start():
            begin.record()

        def stop():
            end.record()
            end.synchronize()
            return begin.elapsed_time(end) / 1000
        return start, stop
    clock = {}

    def start_cpu():
        clock["t"] = time.perf_counter()

    def stop_cpu():
        return time.perf_counter() - clock["t"]
    return start_cpu, stop_cpu


def measure(fn, warmup: int, steps: int) -> dict:
    for _ in range(warmup):
        fn()
    start, stop = timer()
    times = []
    for _ in range(steps):
        start()
        fn()
        times.append(stop())
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
    return {"median_s": statistics.median(times), "p10_s": pick(0.1), "p90_s": pick(0.9), "steps": steps,
            "warmup": warmup}


def profile(fn, path: Path, steps: int = 3) -> list[dict]:
    """A torch.profiler trace of `steps` calls (Chrome/Perfetto JSON at `path`) and its top operators."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(path))
    key = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:15]
    return [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key) / 1000 / steps} for e in events]


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def device_info() -> dict:
    import diffusers
    import transformers

    info = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        info.update(device=name, peak_bf16_flops=next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None))
    else:
        info.update(device=f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
                    peak_bf16_flops=None)
    return info


def peak_memory() -> dict:
    if torch.cuda.is_available():
        return {"peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
    import resource

    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


@contextmanager
def trainer_with_adapter(item: PackItem, backbone):
    """One trainer whose method trains a denoiser adapter too (packing leaves those out: the adapter is per
    concept); the adapter and the concept come out of the shared backbone on leaving."""
    concept = build_concept(item.cfg, item.subject, backbone)[1]
    adapter = build_adapter(item.cfg, backbone)
    try:
        yield [build_trainer(item.cfg, item.directory, backbone, concept, item.subject, adapter=adapter)], []
    finally:
        adapter.remove()
        concept.remove()


def bench_train(cfg, bench: BenchSettings) -> dict:
    """Step time of one concept, or with pack=K of K concepts of the subject in one packed step."""
    subject, k = build_subject(cfg), int(cfg.pack)
    if k > 1 and build_adapter_settings(cfg).kind != "none":
        raise InputError("pack", k, "methods with a denoiser adapter train one concept at a time: set pack=1")
    backbone = build_backbone(cfg)
    work = Path(tempfile.mkdtemp(prefix="dti-bench-"))
    items = [PackItem(cfg, subject, work / f"concept{i}") for i in range(k)]
    with (packed_trainers(items, backbone) if build_adapter_settings(cfg).kind == "none"
          else trainer_with_adapter(items[0], backbone)) as (trainers, failed):
        if failed:
            raise failed[0][1]
        prepared = {id(t): t.prepare() for t in trainers}
        if k == 1:
            def step():
                trainers[0].train_step(prepared[id(trainers[0])])
        else:
            packed = PackedTrainer(trainers)

            def step():
                packed.step(trainers, prepared)
        flops = count_flops(step)
        timing = measure(step, bench.warmup, bench.steps)
        batch = cfg.train.batch_size * cfg.train.grad_accum
        result = {**timing, "flops_per_step": flops, "images_per_s": k * batch / timing["median_s"],
                  "batch": batch, "concepts": k, "seconds_per_concept_step": timing["median_s"] / k,
                  "resolution": cfg.train.resolution}
        if bench.profile:
            trace = Path(f"benchmarks/profiles/train_{cfg.model.name}.trace.json")
            result.update(profile_trace=str(trace), top_ops=profile(step, trace))
    return result


def bench_sample(cfg, bench: BenchSettings) -> dict:
    subject = build_subject(cfg)
    backbone, concept = build_concept(cfg, subject)
    s = cfg.sampler
    prompts = [concept.prompt("a photo of a {} on the beach")] * s.batch_size
    seeds = list(range(s.batch_size))

    def generate():
        backbone.generate(prompts, seeds, s.height, s.width, s.num_inference_steps, s.guidance_scale)

    flops = count_flops(generate)
    timing = measure(generate, bench.warmup, bench.steps)
    return {**timing, "flops_per_batch": flops, "images_per_s": s.batch_size / timing["median_s"],
            "seconds_per_image": timing["median_s"] / s.batch_size, "batch": s.batch_size,
            "size": [s.height, s.width], "num_inference_steps": s.num_inference_steps}


def bench_concept(cfg, bench: BenchSettings) -> dict:
    """Wall time from process start until `bench.concepts` concepts (default pack) of the subject are
    trained, each with its own seed: sequentially with pack=1, else pack per batch (dti.run.packing)."""
    k, pack = bench.concepts or cfg.pack, cfg.pack
    root = Path(tempfile.mkdtemp(prefix="dti-bench-"))
    jobs = []
    for i in range(k):
        job = copy.deepcopy(cfg)
        job.seed = cfg.seed + i
        jobs.append((job, root / f"concept{i}"))
    context = JobContext(backbones=BackboneCache())
    if pack > 1:
        pack_sweep(jobs, pack, context.backbones, context.launch_id)
    for job, run_dir in jobs:
        run_stages(job, run_dir, context)
    done = time.perf_counter() - PROCESS_START
    files = sorted(p for _, run_dir in jobs for p in (run_dir / "embeddings").iterdir())
    written = max(p.stat().st_mtime for p in files) - PROCESS_START_WALL  # the last embedding file's write
    v, steps = cfg.train.validation, cfg.train.steps
    return {"wall_s_process_start_to_embeddings": written, "wall_s_process_start_to_done": done, "steps": steps,
            "concepts": k, "pack": pack, "concepts_per_hour": 3600 * k / done,
            "validations_per_concept": (len(range(v.every, steps, v.every)) if v.every else 0) + 1
            if v.enabled else 0, "embeddings": sorted({p.name for p in files})}


MODES = {"train": bench_train, "sample": bench_sample, "concept": bench_concept}


def bench_config(overrides: list[str]):
    """The composed config (launch.yaml plus the bench: node) and its BenchSettings, or an InputError."""
    overrides = prepare_overrides(overrides)
    register_schema(BenchConfig)
    try:
        cfg = compose_checked(overrides, config_name="bench")
    finally:
        register_schema()  # launch.yaml's own schema again, for whatever composes next in this process
    validate_config(cfg)
    return cfg, BenchSettings(**OmegaConf.to_container(cfg.bench))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in MODES:
        print(f"usage: python -m dti.bench {{{','.join(MODES)}}} [overrides...]", file=sys.stderr)
        return 2
    quiet_libraries()
    try:  # bad input: one line naming the key and the value, exit 2, as for launch.py
        cfg, bench = bench_config(argv[1:])
        result = MODES[argv[0]](cfg, bench)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    info = device_info()
    flops = result.get("flops_per_step") or result.get("flops_per_batch")
    if flops and info["peak_bf16_flops"] and "median_s" in result:
        result["fraction_of_peak"] = flops / result["median_s"] / info["peak_bf16_flops"]
    record = {"mode": argv[0], "model": cfg.model.name, "random_init": bool(cfg.model.get("random_init")),
              "overrides": argv[1:],
              **info, **result, **peak_memory(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    text = json.dumps(record, indent=2, default=str)
    print(text)
    out = Path(bench.out or f"benchmarks/results/{argv[0]}_{cfg.model.name}.json")
    io.write_text(out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
