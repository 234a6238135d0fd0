"""The RESULTS.md rows of one `bench/gpu_check.sh` run, from the JSON and status files it left.

    python bench/gpu_report.py OUT_DIR

OUT_DIR holds `status/<step>` (one line: `ok`, or why the step gave nothing), and the JSON of each
step that ran: `generate.json`, `train.json`, `cold_start.json`, `service.json` (see gpu_check.sh).
Every row of the reference table is printed; a row without a figure says "not measured" and why.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from common import fmt_bytes, fmt_ratio

# The reference table (bench/RESULTS.md, GPU): label, reference figure, and the bench_generate row.
GENERATE_ROWS = (
    ("StyleGAN2 1024 px, batch 32, fp16", "291 img/s, 9.6 GB", ("stylegan2", 1024, 32)),
    ("StyleGAN2 1024 px, batch 1, fp16", "18 ms", ("stylegan2", 1024, 1)),
    ("StyleGAN2 256 px, batch 32, fp16", "1216 img/s", ("stylegan2", 256, 32)),
    ("StyleGAN3-T 1024 px, batch 1, fp16", "13 ms", ("stylegan3-t", 1024, 1)),
)
TRAIN_ROW = ("Training StyleGAN2 256 px, batch 32, ADA", "11.8 s/kimg, 13.7 GB")
STEPS = ("build-ops", "generate", "train", "cold-start", "service")


def read_json(out: Path, name: str) -> dict[str, Any] | None:
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None


def status(out: Path, step: str) -> str:
    path = out / "status" / step
    return path.read_text().strip() if path.is_file() else "not run"


def not_measured(out: Path, step: str) -> str:
    why = status(out, step)
    return f"not measured ({'no result file' if why == 'ok' else why})"


def memory(r: dict[str, Any]) -> str:
    return f"{fmt_bytes(r['ours_peak_memory']['bytes'])} / {fmt_bytes(r['official_peak_memory']['bytes'])}"


def speed(r: dict[str, Any], side: str) -> str:
    """Latency for batch-1 rows (as the reference gives them), throughput otherwise."""
    img_s = r[f"{side}_img_per_s"]
    return f"{1e3 / img_s:.1f} ms" if r["batch"] == 1 else f"{img_s:.0f} img/s"


def generate_rows(out: Path) -> list[str]:
    data = read_json(out, "generate.json")
    found = {(r["arch"], r["res"], r["batch"]): r for r in (data or {}).get("results", [])}
    rows = []
    for label, reference, key in GENERATE_ROWS:
        r = found.get(key)
        if r is None:
            missing = not_measured(out, "generate") if data is None else "not measured (row not in this run)"
            rows.append(f"| {label} | {reference} | {missing} | {missing} | — | — |")
            continue
        rows.append(
            f"| {label} | {reference} | {speed(r, 'ours')} | {speed(r, 'official')} | {fmt_ratio(r)} "
            f"| {memory(r)} |"
        )
    # Rows of a tiny (dry) run have no reference counterpart; show them as they are.
    known = {key for _, _, key in GENERATE_ROWS}
    for key, r in found.items():
        if key not in known:
            label = f"{r['arch']} {r['res']} px, batch {r['batch']}, {'fp16' if r['fp16'] else 'fp32'} (tiny)"
            rows.append(
                f"| {label} | — | {speed(r, 'ours')} | {speed(r, 'official')} | {fmt_ratio(r)} | {memory(r)} |"
            )
    return rows


def train_row(out: Path) -> str:
    label, reference = TRAIN_ROW
    data = read_json(out, "train.json")
    if data is None:
        missing = not_measured(out, "train")
        return f"| {label} | {reference} | {missing} | {missing} | — | — |"
    r = data["results"][0]
    if (r["res"], r["batch"], r["fp16"]) != (256, 32, True):
        label = f"Training {r['arch']} {r['res']} px, batch {r['batch']}, {r['aug']} (tiny)"
    return (
        f"| {label} | {reference} | {r['ours_s_per_kimg']:.1f} s/kimg | {r['official_s_per_kimg']:.1f} s/kimg "
        f"| {fmt_ratio(r)} | {memory(r)} |"
    )


def header(out: Path) -> list[str]:
    env = read_json(out, "env.json") or {}
    gen = read_json(out, "generate.json") or read_json(out, "train.json") or {}
    official = gen.get("official", {})
    lines = [
        f"- **Device**: {env.get('gpu', env.get('device', '?'))} ({env.get('gpu_memory_gb', '?')} GB), "
        f"CPU {env.get('cpu', '?')} x {env.get('cpu_count', '?')}; driver {env.get('driver', '?')}",
        f"- **Date**: {env.get('date', '?')}",
        f"- **Software**: PyTorch {env.get('torch', '?')}, CUDA {env.get('cuda', '?')}, "
        f"cuDNN {env.get('cudnn', '?')}, Python {env.get('python', '?')}",
        f"- **Official code**: {official.get('repo', '?')} at {official.get('commit', '?')}, "
        f"impl `{official.get('impl', '?')}`; shims: {'; '.join(official.get('shims', [])) or 'none'}",
        f"- **Settings**: {env.get('settings', '?')}",
        "- **Steps**: " + "; ".join(f"{step}: {status(out, step)}" for step in STEPS),
    ]
    return lines


def report(out: Path) -> str:
    lines = header(out)
    lines += [
        "",
        "| row | official on H100 (reference) | ours | official, same run | ratio | memory ours / official |",
        "| --- | --- | --- | --- | --- | --- |",
        *generate_rows(out),
        train_row(out),
    ]
    for step, title in (("cold-start", "Cold start"), ("service", "Service")):
        lines += ["", f"{title}:", ""]
        table = out / f"{step}.md"
        rows = (
            [line for line in table.read_text().splitlines() if line.startswith("|")]
            if table.is_file()
            else []
        )
        lines += rows or [not_measured(out, step)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(report(Path(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
