"""The Markdown of bench/results/amortised.md from bench_amortised's measurements, with its verdicts."""
from __future__ import annotations

import statistics
from pathlib import Path

import torch

from worker.engine.metrics import psnr

FAST_DEFAULT_ITERS, PUBLISHED_ITERS = 200, 1000   # the photoguard preset's counts under each schedule


def mean(values) -> float:
    return statistics.fmean(values)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(meta: dict, rows: list[dict], speed: dict, impress_runs: dict, clean: torch.Tensor, clean_out: torch.Tensor,
           mixed: dict, cascades: dict, split: list[dict]) -> tuple[list[str], dict]:
    fast_iters = mean([its for _, its, _ in impress_runs.values()]) if impress_runs else FAST_DEFAULT_ITERS
    md = ["# Amortised purification against IMPRESS (taef2)", "",
          f"Weights `{meta['weights']['name']}` ({meta['weights']['revision'][:23]}...), autoencoder "
          f"`{meta['model']['name']}`, perceptual distance 1-SSIM (offline). Held-out pictures ({len(meta['pictures'])}, "
          f"{meta['size']} px): {', '.join(meta['pictures'])}. Protections at {meta['attack_steps']} steps. "
          f"Load average during the run: {', '.join(f'{v:.1f}' for v in meta['load_average'])} on 2 shared cores, "
          "so every time below is inflated by the other jobs of the machine, IMPRESS's and the network's alike."
          + (" The work folder was filled by stage runs of the same command in parallel processes (`--only baseline`, "
             "`--only purifier`, `--only speed`); this report is what it held." if meta.get("stages") else ""), "",
          "## Speed per image (CPU)", "",
          "| side | amortised ms | IMPRESS fast ms | IMPRESS published ms | faster than fast | faster than published |",
          "|---:|---:|---:|---:|---:|---:|"]
    summary: dict = {"fast_iterations": fast_iters}
    if speed["impress_ms_per_iteration"] is None:
        md.append("| (IMPRESS's ms per iteration were not measured in this run) | | | | | |")
    if speed["amortised"] is None:
        md.append("| (the network's ms per image were not measured in this run) | | | | | |")
    for size, ms in (speed["amortised"] or {}).items():
        if speed["impress_ms_per_iteration"] is None:
            md.append(f"| {size} | {ms:.1f} | - | - | - | - |")
            continue
        fast = speed["impress_ms_per_iteration"][size] * FAST_DEFAULT_ITERS
        published = speed["impress_ms_per_iteration"][size] * PUBLISHED_ITERS
        summary[f"speedup_fast_{size}"] = fast / ms
        md.append(f"| {size} | {ms:.1f} | {fast:,.0f} | {published:,.0f} | {fast / ms:,.0f}x | {published / ms:,.0f}x |")
    capped = f", capped at {meta['impress_iters']} on this CPU" if meta["impress_iters"] else ""
    md += ["", f"IMPRESS: ms per iteration measured (2 iterations, one image; the same under either schedule) times "
           f"its count: fast {FAST_DEFAULT_ITERS} (the photoguard preset's fifth; its early stop can end it sooner), "
           f"published {PUBLISHED_ITERS}. The quality runs below took {fast_iters:.0f} iterations{capped}.", ""]
    md += ["## Quality per protection (means over the pictures)", "",
           "| protection | trained on | purifier | gain dB | decoded PSNR dB | consistency | latent dist. | PSNR to input | "
           "SSIM to input | s/image |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        md.append(f"| {row['protection']} | {row['kind']} | {row['purifier']} | {mean(row['gain_db']):+.2f} | "
                  f"{mean(row['decoded_psnr_db']):.2f} | {mean(row['consistency']):.5f} | {mean(row['latent_distance']):.4f} | "
                  f"{mean(row['psnr_to_input_db']):.2f} | {mean(row['ssim_to_input']):.4f} | "
                  f"{row.get('seconds_per_image', float('nan')):.2f} |")
    by = {(r["protection"], r["purifier"]): mean(r["gain_db"]) for r in rows}
    ratios = {name: by[(name, "amortised")] / by[(name, "impress-fast")] for name in impress_runs
              if by.get((name, "impress-fast"), 0) > 0}
    clean_psnr = psnr(clean_out, clean)
    summary.update({"gain_ratio": ratios, "clean_psnr_db": clean_psnr.tolist()})
    speed_ok = summary.get("speedup_fast_256", 0) >= 200
    md += ["", "## Targets", "",
           f"- >= 200x faster than IMPRESS fast at 256 px: {summary.get('speedup_fast_256', 0):,.0f}x, {verdict(speed_ok)}."]
    for name, ratio in ratios.items():
        kind = "trained-on" if name != "mist-16" else "held-out"
        md.append(f"- >= 80% of IMPRESS fast's decoded-PSNR gain on {name} ({kind} protection): {ratio:.0%} "
                  f"({by[(name, 'amortised')]:+.2f} dB against {by[(name, 'impress-fast')]:+.2f} dB)"
                  + (f", {verdict(ratio >= 0.8)}." if name != "mist-16" else " (held out: reported as it falls)."))
    md.append(f"- clean pictures >= 35 dB from their input: mean {clean_psnr.mean():.2f} dB, worst {clean_psnr.min():.2f} dB, "
              f"{verdict(bool(clean_psnr.min() >= 35))}.")
    missing = [what for what, there in (("the adaptive attack", ("photoguard-adaptive", "amortised") in by),
                                        ("the cascade on mixed traffic", mixed is not None)) if not there]
    if ("photoguard-adaptive", "amortised") in by:
        md += adaptive_section(by, cascades, summary)
    if mixed is not None:
        md += mixed_section(mixed, cascades, clean, summary)
    md += both_ways_section(split)
    if missing:
        md += ["", f"Not measured in this run (the shared CPU ran out of time): {', '.join(missing)}."]
    return md, summary


def adaptive_section(by: dict, cascades: dict, summary: dict) -> list[str]:
    plain, adaptive = by[("photoguard-16", "amortised")], by[("photoguard-adaptive", "amortised")]
    survives = adaptive / plain if plain > 0 else float("nan")
    lines = ["", "## The adaptive attacker", "",
             "`photoguard-adaptive` is PhotoGuard's encoder attack at the same budget as photoguard-16 (L-inf 16/255), "
             "aimed through the network: PGD on E(f(x + d)), white box.", "",
             f"- amortised gain on photoguard-16: {plain:+.2f} dB; on photoguard-adaptive: {adaptive:+.2f} dB"
             + (f": {survives:.0%} of the gain survives the adaptive attack." if plain > 0.1 else
                " (with next to no gain to begin with, the share that survives means nothing).")]
    summary["adaptive_gain_survives"] = survives
    if "photoguard-adaptive" in cascades:
        flagged = cascades["photoguard-adaptive"]["flagged"]
        cascade_gain = by[("photoguard-adaptive", "cascade")]
        summary["adaptive_cascade_flagged"] = flagged
        lines.append(f"- the cascade on photoguard-adaptive: {sum(flagged)} of {len(flagged)} images still flagged after "
                     f"the amortised pass and sent on to IMPRESS; gain {cascade_gain:+.2f} dB"
                     + (" (it recovers)." if cascade_gain > adaptive + 0.1 else " (it does not recover)."))
    return lines


def mixed_section(mixed: dict, cascades: dict, clean: torch.Tensor, summary: dict) -> list[str]:
    traffic = [("clean", mixed)] + [(name, c) for name, c in cascades.items()]
    seconds = [s for _, run in traffic for s in run["seconds"]]
    flagged = [f for _, run in traffic for f in run["flagged"]]
    clean_psnr = psnr(mixed["out"], clean)
    summary.update({"cascade_mean_seconds": mean(seconds), "cascade_flagged_share": mean(flagged)})
    lines = ["", "## The cascade on mixed traffic", "",
             f"Clean pictures and their photoguard-16 and photoguard-adaptive versions, {len(seconds)} images: "
             f"mean {mean(seconds):.2f} s per image; {sum(flagged)} of {len(flagged)} went on to IMPRESS.", "",
             "| traffic | images sent to IMPRESS | mean s/image |", "|---|---:|---:|"]
    lines += [f"| {name} | {sum(run['flagged'])} of {len(run['flagged'])} | {mean(run['seconds']):.2f} |" for name, run in traffic]
    lines += ["", f"Clean pictures through the cascade: mean {clean_psnr.mean():.2f} dB from their input."]
    return lines


def both_ways_section(split: list[dict]) -> list[str]:
    """Every protection's gain under each network, marked trained on or held out."""
    networks = list(dict.fromkeys(row["weights"] for row in split))
    if len(networks) < 2:
        return []
    trained = {row["weights"]: f"trained on {', '.join(row['trained_on'])}; {row['steps']} steps" for row in split}
    gain = {(row["weights"], row["protection"]): (mean(row["gain_db"]), row["held_out"]) for row in split}
    lines = ["", "## Every protection both ways", "",
             "The decoded-PSNR gain of networks trained on different protections (amortised pass only, same pictures); "
             "*held out* marks a protection the network never saw. The networks' training budgets differ (their steps).", "",
             "| protection | " + " | ".join(f"`{Path(n).name}` ({trained[n]})" for n in networks) + " |",
             "|---|" + "---:|" * len(networks)]
    for protection in dict.fromkeys(row["protection"] for row in split):
        cells = []
        for n in networks:
            value, held_out = gain[(n, protection)]
            cells.append(f"{value:+.2f} dB" + (" *held out*" if held_out else ""))
        lines.append(f"| {protection} | " + " | ".join(cells) + " |")
    return lines
