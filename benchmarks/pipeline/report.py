"""Markdown tables of a ``benchmarks.pipeline`` run."""

from __future__ import annotations

from typing import Any

from benchmarks.common import fmt, markdown_table, median
from benchmarks.pipeline.runs import Runs


def report(runs: Runs) -> str:
    parts = [_machine(runs)]
    if runs.detector_results:
        parts.append(_detector(runs.detector_results))
    if runs.matcher_results:
        parts.append(_matcher(runs.matcher_results))
    if runs.latency_results:
        parts.append(_latency(runs.latency_results))
    if runs.scaling_results:
        title = "### 4. Detector scaling: a backlog over 4 partitions (one store each)"
        parts.append(_scaling(runs.scaling_results, title))
    if runs.store_scaling_results:
        title = "### 4b. Detector scaling: one store's cameras over 4 partitions (one camera each)"
        parts.append(_scaling(runs.store_scaling_results, title))
    return "\n\n".join(parts) + "\n"


def _machine(runs: Runs) -> str:
    m = runs.machine
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    load = m.get("load_during_run", {})
    sections = ", ".join(
        f"{name} {s['seconds']:.0f} s (load {s['load_min']:.1f}-{s['load_max']:.1f})"
        for name, s in runs.sections.items()
    )
    lines = [
        f"## Pipeline benchmarks{' (--quick)' if runs.quick else ''}",
        "",
        f"- machine: {m.get('cpu')}, {m.get('cores')} cores; "
        f"threads in this process: {m.get('omp_env') or 'unlimited'}",
        f"- versions: {versions}; Kafka {m.get('kafka_broker')}, Redis {m.get('redis_server')}",
        f"- load average (1 min) at start: {m.get('load_average_at_start')}; during the run "
        f"min {fmt(load.get('min'))}, median {fmt(load.get('median'))}, "
        f"max {fmt(load.get('max'))} ({load.get('samples', 0)} samples)",
        f"- sections: {sections}",
    ]
    if runs.logdir:
        lines.append(f"- worker logs: {runs.logdir}")
    return "\n".join(lines)


def _detector(d: dict[str, Any]) -> str:
    rows = [
        [
            c["name"],
            c["frame"],
            fmt(c["kb"], 0),
            fmt(c["fps"]),
            fmt(c["cpu_fps"]),
            fmt(1e3 / c["fps"], 0),
            fmt(c["fps"] / c["cpu_fps"]),
            f"{c['spread'] * 100:.0f}%",
            str(len(c["wall"])),
        ]
        for c in d["cases"]
    ]
    table = markdown_table(
        [
            "frame",
            "size",
            "JPEG KB",
            "frames/s (wall)",
            "frames/s (CPU)",
            "ms/frame (wall)",
            "CPU/wall",
            "spread",
            "rounds",
        ],
        rows,
    )
    split = markdown_table(
        [
            "frame",
            "decode ms",
            "detect ms",
            "landmarks + encode ms",
            "rest of handle ms",
            "handle ms",
        ],
        [
            [
                f"{h}p, one face",
                fmt(b["decode_ms"], 1),
                fmt(b["detect_ms"], 1),
                fmt(b["encode_ms"], 1),
                fmt(b["other_ms"], 1),
                fmt(b["handle_ms"], 1),
            ]
            for h, b in d["breakdown"].items()
        ],
    )
    return (
        "### 1. Detector: DetectorHandler.handle, one thread\n\n"
        "Median over rounds; CPU = this thread's CPU time, so CPU/wall below 1 is time spent "
        "waiting for a core; spread = (max - min) / median of the per-round rates.\n\n"
        f"{table}\n\nWhere a frame's time goes (medians):\n\n{split}"
    )


def _decisions(decided: dict[str, dict[str, int]], wrong: int) -> str:
    parts = []
    for expected in ("member", "returning", "new"):
        row = decided.get(expected, {})
        total = sum(row.values())
        parts.append(f"{expected} {row.get(expected, 0)}/{total}")
    return ", ".join(parts) + f"; wrong person {wrong}"


def _matcher(m: dict[str, Any]) -> str:
    model = m["model"]
    rows = []
    for size in m["sizes"]:
        for g in size["galleries"]:
            rows.append(
                [
                    f"{size['samples']:,}",
                    f"{size['people']:,}",
                    g["label"],
                    fmt(g["build_seconds"], 1),
                    fmt(g["obs_per_s"], 0),
                    fmt(g["us"]["member"], 0),
                    fmt(g["us"]["returning"], 0),
                    fmt(g["us"]["new"], 0),
                    fmt(g["identify_us"], 0),
                    fmt(g["search_us"], 0),
                    fmt(g["add_ms"], 2),
                    _decisions(g["decided"], g["wrong_person"]),
                ]
            )
    table = markdown_table(
        [
            "member samples",
            "members",
            "index",
            "build s",
            "obs/s (mix)",
            "member µs",
            "returning µs",
            "new µs",
            "Gallery.identify µs",
            "of which Faiss µs",
            "Gallery.add ms",
            "decisions (expected → got)",
        ],
        rows,
    )
    rb = m["rebuild"]
    rebuild = markdown_table(
        ["changelog", "records", "samples", "rebuild s", "ms per record"],
        [
            [
                "identities.v1 → one store shard (VisitorShards.own)",
                f"{rb['visitors']:,}",
                f"{rb['visitors']:,}",
                fmt(rb["shard_seconds"], 1),
                fmt(rb["shard_seconds"] / rb["visitors"] * 1e3, 2),
            ],
            [
                "members.v1 → member tier (MemberTier.start)",
                f"{rb['members']:,}",
                f"{rb['member_samples']:,}",
                fmt(rb["member_seconds"], 1),
                fmt(rb["member_seconds"] / max(rb["members"], 1) * 1e3, 2),
            ],
        ],
    )
    text = (
        "### 2. Matcher: MatcherHandler.handle, one thread\n\n"
        f"Synthetic encodings: per-dimension mean/std of {model['fitted_on']} real LFW "
        f"encodings; measured same person {model['same_mean']:.3f} apart, different people "
        f"{model['different_mean']:.3f} (1st percentile {model['different_p1']:.3f}), norm "
        f"{model['norm_mean']:.2f} (the real ones: different people "
        f"{model['real_different_mean']:.3f} apart, 1st percentile "
        f"{model['real_different_p1']:.3f}, norm {model['real_norm_mean']:.2f}). "
        "Three samples per member. The member tier holds the "
        "gallery (bulk-loaded through Gallery.load); the store's visitor shard starts empty and "
        "grows by the strangers minted. Probes: a third member photos, a third returning "
        "strangers, a third new strangers; obs/s is the whole mix, the µs columns are per-kind "
        "medians of one handle() call, Gallery.identify alone on the member probes, and "
        "the Faiss k-nearest search inside it (Gallery.search); Gallery.add = one new "
        "one-sample identity (a mint into a shard of that size).\n\n"
        f"{table}\n\nRebuilding from the changelogs (real broker, real code path):\n\n{rebuild}"
    )
    return text


def _latency(r: dict[str, Any]) -> str:
    rows = [
        [label, *(fmt(r[key][p], 3) for p in ("p50", "p95", "p99", "max"))]
        for label, key in (
            ("captured_at → match event read (total)", "latency"),
            ("captured_at → observation produced (camera + detector)", "detector"),
            ("observation → match event produced (matcher)", "matcher"),
            ("match event produced → read", "delivery"),
        )
    ]
    table = markdown_table(["span (seconds)", "p50", "p95", "p99", "max"], rows)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(r["kinds"].items()))
    cpu = ", ".join(f"{s} {v:.2f}" for s, v in r["cpu_share"].items())
    cpu += f", everything else on the machine {r['others_cores']:.2f}"
    return (
        "### 3. End to end: 1 detector, 1 matcher, 1 sink on the local broker\n\n"
        f"{r['frames']} frames (480p, one face) at {r['rate']:g}/s over "
        f"{r['publish_seconds']:.0f} s; {r['events']} match events read ({kinds}). Workers ready "
        f"{r['ready_seconds']:.1f} s after start. CPU used (cores) while measuring: {cpu}.\n\n"
        f"{table}"
    )


def _scaling(results: list[dict[str, Any]], title: str) -> str:
    by: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["detectors"], []).append(r)
    rows = []
    for n, rs in sorted(by.items()):
        fps = [r["fps"] for r in rs]
        rows.append(
            [
                str(n),
                str(len(rs)),
                str(rs[0]["frames"]),
                fmt(median(fps)),
                " ".join(fmt(f) for f in fps),
                fmt(median([r["cpu_ms_per_frame"] for r in rs]), 0),
                fmt(median([r["cores_used"] for r in rs])),
                fmt(median([r["others_cores"] for r in rs])),
                fmt(median([r["load1"] for r in rs]), 1),
            ]
        )
    table = markdown_table(
        [
            "detectors",
            "runs",
            "frames",
            "frames/s (median)",
            "each run",
            "CPU ms/frame",
            "cores used by detectors",
            "cores used by the rest",
            "load1 at end",
        ],
        rows,
    )
    text = (
        f"{title}\n\n"
        "Time from the first frame published until the detector group has committed every "
        "frame. Cores: CPU time of the detector processes, and the rest of the machine's busy "
        "time (/proc/stat: the broker, this script, anyone else's work) over the same wall "
        f"time.\n\n{table}"
    )
    each = markdown_table(
        ["run", "detectors", "seconds", "frames/s", "detector cores", "rest cores", "steal"],
        [
            [
                str(i + 1),
                str(r["detectors"]),
                fmt(r["seconds"], 1),
                fmt(r["fps"]),
                fmt(r["cores_used"]),
                fmt(r["others_cores"]),
                fmt(r["steal_cores"]),
            ]
            for i, r in enumerate(results)
        ],
    )
    text += f"\n\nEvery run, in the order run:\n\n{each}"
    if 1 in by and 2 in by:
        one, two = median([r["fps"] for r in by[1]]), median([r["fps"] for r in by[2]])
        pairs = [b["fps"] / a["fps"] for a, b in zip(by[1], by[2], strict=False)]
        text += (
            f"\n\nSpeed-up 2 vs 1 detectors: {two / one:.2f} (ratio of medians); per run pair "
            f"{', '.join(f'{p:.2f}' for p in pairs)}."
        )
    return text
