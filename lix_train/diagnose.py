"""Look inside a finished distillation run: what the teacher knows that the student does not, and
what the LIX losses do with it.

    python -m lix_train.diagnose --run-dir runs/compare/synthetic/runs/lix-s0
    python -m lix_train.diagnose --run-dir RUN --split val --frames 32 --bandwidths 1,0.3,0.1
    python -m lix_train.diagnose --run-dir RUN_A RUN_B RUN_C --table gradients.md   # runs side by side

On held-out frames (validation split by default, so nothing is tuned on the test drives):

* pixels by who is right: both, the teacher only (what geometry resolves), the student only,
  neither; and where the logit loss puts its weight: the mean TCKD and NCKD per group, their
  share of the DKD total at the run's (alpha, beta), and the confidence rule's weights per group;
* per distilled feature stage: the token count, CKA between the student and teacher features
  as they are, and for each kernel bandwidth scale the effective number of student channels a
  channel-recalibration row averages (exp of its entropy: C_s means every row is the plain mean)
  and the CKA after recalibration.

Printed as tables and written to RUN/diagnosis.json. Reads the run's config.yaml, its
student.pt and the teacher its metrics.json names. Given several runs, it also prints one
comparison table (the teacher-only pixel share and each term's gradient against CE's per run),
and --table FILE writes it as Markdown with the command that made it.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from lix_train.cli import UserError, run_cli
from lix_common.cli import OneLineParser
from lix_train.config import ConfigError, from_dict
from lix_train.data.build import build_datasets
from lix_train.distill import load_teacher
from lix_train.distillers import build_distiller
from lix_train.engine.checkpoint import load_checkpoint, restore_checkpoint
from lix_train.experiment import ExperimentConfig, network_from_signature, read_stored_config
from lix_train.losses.arfd import to_tokens, unit_columns
from lix_train.losses.cka import linear_cka
from lix_train.losses.common import valid_mask
from lix_train.losses.dkd import decoupled_parts
from lix_train.losses.dwld import confidence_weights, teacher_gate
from lix_train.losses.kernels import effective_count, regression_weights
from lix_train.report import evenly_spaced_indices, write_json, write_text

PROG = "python -m lix_train.diagnose"
OUT_FILE = "diagnosis.json"
GROUPS = ("both right", "teacher only", "student only", "both wrong")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Where the teacher is right and the student is not, how the logit loss weights those pixels, "
                    "and how ARFD's kernel recalibration behaves per stage and bandwidth, on held-out frames of a "
                    "finished distillation run. Writes RUN/diagnosis.json.")
    parser.add_argument("--run-dir", type=Path, required=True, nargs="+", metavar="RUN",
                        help="Finished `python -m lix_train.distill` run folders (config.yaml, student.pt, "
                             "metrics.json); several are compared side by side.")
    parser.add_argument("--split", choices=("train", "val", "test"), default="val", help="Frames to look at.")
    parser.add_argument("--frames", type=int, default=16, metavar="N", help="Evenly spaced frames of the split.")
    parser.add_argument("--bandwidths", default="1,0.3,0.1", metavar="S,S,...",
                        help="ARFD bandwidth scales to compare (sigma = scale x median distance).")
    parser.add_argument("--table", type=Path, default=None, metavar="FILE",
                        help="Also write the runs' comparison table (Markdown, with this command) to FILE.")
    return parser


def parse_scales(text: str) -> list[float]:
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--bandwidths {text!r}: expected comma-separated numbers such as 1,0.3,0.1") from None
    if not scales or any(s <= 0 for s in scales):
        raise UserError(f"--bandwidths {text!r}: need at least one scale, each > 0")
    return scales


def load_run(run_dir: Path):
    """(config, teacher, student) of a finished run, with clear errors for what is missing."""
    for name in ("config.yaml", "student.pt", "metrics.json"):
        if not (run_dir / name).is_file():
            raise UserError(f"--run-dir {run_dir}: no {name}; is it a finished distillation run?")
    try:
        cfg = from_dict(ExperimentConfig, read_stored_config(run_dir / "config.yaml"))
    except ConfigError as err:
        raise UserError(f"{run_dir / 'config.yaml'}: {err}") from None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    teacher_path = Path((metrics.get("teacher_run") or metrics["teacher"])["checkpoint"])  # val-only runs: teacher_run
    teacher = load_teacher(cfg, teacher_path).eval()
    ckpt = load_checkpoint(run_dir / "student.pt")
    student = network_from_signature(ckpt["signature"])
    restore_checkpoint(ckpt, run_dir / "student.pt", model=student, signature=ckpt["signature"])
    return cfg, teacher, student.eval()


def trained_extras(run_dir: Path) -> dict:
    """The distiller's extra modules' weights from RUN/checkpoints/latest.pt ({} if there is none)."""
    latest = run_dir / "checkpoints" / "latest.pt"
    return dict(load_checkpoint(latest).get("extra") or {}) if latest.is_file() else {}


def frames_batch(cfg, split: str, count: int):
    """`count` evenly spaced frames of the split with X, as one batch (evaluation transforms)."""
    import torch

    dataset = build_datasets(cfg.data, cfg.data.modality, (split,))[split]
    items = [dataset[i] for i in evenly_spaced_indices(len(dataset), count)]
    return {key: torch.stack([item[key] for item in items]) for key in ("image", "x", "label")}


def pixel_groups(student_logits, teacher_logits, target, ignore_index: int) -> dict:
    """Boolean masks [B, H, W] of the four who-is-right groups over valid pixels."""
    valid = target != ignore_index
    s_ok = (student_logits.argmax(1) == target) & valid
    t_ok = (teacher_logits.argmax(1) == target) & valid
    return {"both right": s_ok & t_ok, "teacher only": t_ok & ~s_ok, "student only": s_ok & ~t_ok,
            "both wrong": valid & ~s_ok & ~t_ok}


def logit_report(cfg, student_logits, teacher_logits, target) -> dict:
    """Per group: pixel share, mean TCKD / NCKD, share of the DKD total, confidence-rule weights."""
    ignore, w = cfg.distill.ignore_index, cfg.distill.dwld  # the run's own DWLD settings (T, means, gate)
    groups = pixel_groups(student_logits, teacher_logits, target, ignore)
    tckd, nckd, valid, conf = decoupled_parts(student_logits, teacher_logits, target, w.temperature, ignore)
    gate = teacher_gate(conf, valid_mask(target, ignore)[1], w.gate)
    w_tc, w_nc = confidence_weights(conf, valid, w.alpha, w.beta, w.weight_range, gate, w.renormalise)
    dkd = w.alpha * tckd + w.beta * nckd
    total = float(dkd[valid].sum())
    n_valid = int(valid.sum())
    out = {}
    for name in GROUPS:
        mask = groups[name]
        n = int(mask.sum())
        mean = (lambda t: float(t[mask].mean()) if n else None)  # noqa: E731
        out[name] = {"pixels": n / max(n_valid, 1), "tckd": mean(tckd), "nckd": mean(nckd),
                     "dkd_share": float(dkd[mask].sum()) / total if total > 0 else None,
                     "confidence_w_tc": mean(w_tc), "confidence_w_nc": mean(w_nc)}
    return out


def feature_report(cfg, student_feats, teacher_feats, scales: list[float]) -> list[dict]:
    """Per distilled stage: tokens, CKA as is, and per bandwidth the effective channels and CKA after recalibration."""
    a = cfg.distill.arfd
    rows = []
    for k in a.stages:
        s_tok, t_tok = to_tokens(student_feats[k].float(), teacher_feats[k].float(), a.max_tokens, a.token_reduce)
        row = {"stage": k, "tokens": s_tok.shape[1], "student_channels": s_tok.shape[2],
               "teacher_channels": t_tok.shape[2], "cka_raw": float(linear_cka(s_tok, t_tok).mean()), "bandwidths": []}
        kernel = a.kernel if a.kernel != "none" else "laplace"
        for scale in scales:
            w = regression_weights(unit_columns(t_tok), unit_columns(s_tok), kernel, sigma_scale=scale)
            recal = (w @ s_tok.transpose(1, 2)).transpose(1, 2)
            row["bandwidths"].append({"scale": scale, "effective_channels": float(effective_count(w).mean()),
                                      "cka_recalibrated": float(linear_cka(recal, t_tok).mean())})
        rows.append(row)
    return rows


def gradient_report(cfg, teacher, student, batch, num_classes: int, extras: dict) -> dict:
    """Where each distillation term's gradient goes: its norm over the student's parameters, and its
    cosine with the label loss's gradient (negative = it pulls against CE), at full strength (ramp 1).

    The student is the finished one and the frames are held-out ones, so this is the state at the
    end of training. `extras` are the distiller's trained parts ({} when the run kept none).
    """
    import torch

    distiller = build_distiller(cfg.distill, student, teacher, num_classes=num_classes,
                                x_channels=cfg.data.x_channels)
    for name, state in extras.items():  # the trained DWC / projectors / heads, from the run's last checkpoint
        getattr(distiller, name).load_state_dict(state)
    distiller.train()  # BatchNorm in batch mode as in training; its running statistics are restored below
    saved = {k: v.clone() for k, v in student.state_dict().items()}
    params = [p for p in student.parameters() if p.requires_grad]
    try:
        with torch.enable_grad():
            _, losses = distiller.forward_train(batch["image"], batch["x"], batch["label"], progress=1.0)
            grads = {}
            for name, loss in losses.items():
                if loss.requires_grad:
                    g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                    grads[name] = torch.cat([(x if x is not None else torch.zeros_like(p)).flatten()
                                             for x, p in zip(g, params)])
    finally:
        student.load_state_dict(saved)
        student.eval()
    ce = grads.get("loss_h")
    out = {}
    for name, g in grads.items():
        out[name] = {"value": float(losses[name].detach()), "grad_norm": float(g.norm()),
                     "ratio_to_ce": float(g.norm() / ce.norm()) if ce is not None and ce.norm() > 0 else None,
                     "cosine_with_ce": float(torch.nn.functional.cosine_similarity(g, ce, dim=0)) if ce is not None
                     else None}
    return out


def format_report(report: dict) -> str:
    lines = [f"{report['run_dir']}: {report['frames']} {report['split']} frames, method {report['method']}", "",
             "pixels by who is right  share   TCKD    NCKD   DKD share  w_tc(conf)  w_nc(conf)"]
    for name, g in report["logits"].items():
        def f(v, spec="7.3f"):
            return format(v, spec) if v is not None else "      -"
        lines.append(f"{name:<22} {100 * g['pixels']:5.1f} %  {f(g['tckd'])} {f(g['nckd'])}  "
                     f"{f(None if g['dkd_share'] is None else 100 * g['dkd_share'], '7.1f')} %  "
                     f"{f(g['confidence_w_tc'], '9.2f')}  {f(g['confidence_w_nc'], '9.2f')}")
    lines += ["", "ARFD stage  tokens  C_s  C_t  CKA as is  | per bandwidth scale: effective channels, CKA recalibrated"]
    for row in report["features"]:
        per = "  ".join(f"{b['scale']:g}: {b['effective_channels']:.1f}/{row['student_channels']}, "
                        f"{b['cka_recalibrated']:.3f}" for b in row["bandwidths"])
        lines.append(f"{row['stage']:>10}  {row['tokens']:>6}  {row['student_channels']:>3}  "
                     f"{row['teacher_channels']:>3}  {row['cka_raw']:9.3f}  | {per}")
    if report.get("gradients"):
        lines += ["", "gradient over the student's weights   value   |grad|   / CE's   cosine with CE"]
        for name, g in report["gradients"].items():
            ratio = "      -" if g["ratio_to_ce"] is None else f"{g['ratio_to_ce']:7.2f}"
            cosine = "      -" if g["cosine_with_ce"] is None else f"{g['cosine_with_ce']:+7.3f}"
            lines.append(f"{name:<36} {g['value']:7.3f}  {g['grad_norm']:7.4f}  {ratio}  {cosine}")
    return "\n".join(lines) + "\n"


def comparison_rows(reports: list[dict]) -> tuple[list[str], list[dict]]:
    """(the distillation terms any run has, one row per run): its teacher-only pixel share and, per
    term, |grad| / CE's and the cosine with CE's gradient (None where the run has no such term)."""
    terms = sorted({name for r in reports for name in r.get("gradients", {}) if name != "loss_h"})
    rows = []
    for r in reports:
        grads = r.get("gradients", {})
        rows.append({"run": Path(r["run_dir"]).name, "method": r["method"],
                     "teacher_only": r["logits"]["teacher only"]["pixels"],
                     "terms": {t: (grads[t]["ratio_to_ce"], grads[t]["cosine_with_ce"]) if t in grads else None
                               for t in terms}})
    return terms, rows


def format_comparison(reports: list[dict], command: str | None = None) -> str:
    """The comparison as a Markdown table (and the command that made it, when given)."""
    terms, rows = comparison_rows(reports)
    first = reports[0]
    lines = [f"Command: `{command}`", ""] if command else []
    lines += [f"{first['frames']} {first['split']} frames per run; the finished students; each distillation term at "
              "full strength. |grad| / CE's: its gradient norm over the student's weights relative to the label "
              "loss's; cos: the cosine between the two (negative: it pulls against the labels).", "",
              "| run | method | teacher-only pixels | " + " | ".join(f"{t} \\|grad\\| / CE's | {t} cos" for t in terms)
              + " |", "|---" * (3 + 2 * len(terms)) + "|"]
    for row in rows:
        cells = []
        for t in terms:
            pair = row["terms"][t]
            cells += ["-", "-"] if pair is None else [
                "-" if pair[0] is None else f"{pair[0]:.2f}", "-" if pair[1] is None else f"{pair[1]:+.2f}"]
        lines.append(f"| {row['run']} | {row['method']} | {100 * row['teacher_only']:.1f} % | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"


def diagnose_run(run_dir: Path, loaded: tuple, split: str, frames: int, scales: list[float]) -> dict:
    """The report of one run (what RUN/diagnosis.json holds); `loaded` is its load_run()."""
    import torch

    cfg, teacher, student = loaded
    batch = frames_batch(cfg, split, frames)
    with torch.no_grad():
        t_logits, t_feats = teacher(batch["image"], batch["x"])
        s_logits, s_feats = student(batch["image"])
    return {"run_dir": str(run_dir), "split": split, "frames": int(batch["image"].shape[0]),
            "method": cfg.distill.method,
            "logits": logit_report(cfg, s_logits, t_logits, batch["label"]),
            "features": feature_report(cfg, s_feats, t_feats, scales),
            "gradients": gradient_report(cfg, teacher, student, batch, int(s_logits.shape[1]),
                                         trained_extras(run_dir))}


def run(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise UserError(f"--frames {args.frames}: need at least one")
    scales = parse_scales(args.bandwidths)
    loaded = [load_run(run_dir) for run_dir in args.run_dir]  # every folder checked before any is scored
    reports = []
    for run_dir, run_parts in zip(args.run_dir, loaded):
        report = diagnose_run(run_dir, run_parts, args.split, args.frames, scales)
        write_json(run_dir / OUT_FILE, report)
        print(format_report(report), end="")
        print(f"written: {run_dir / OUT_FILE}", flush=True)
        reports.append(report)
    if len(reports) > 1 or args.table is not None:
        command = shlex.join([*PROG.split(), "--run-dir", *map(str, args.run_dir), "--split", args.split,
                              "--frames", str(args.frames), "--bandwidths", args.bandwidths,
                              "--table", str(args.table)]) if args.table is not None else None
        table = format_comparison(reports, command)
        print("", table, sep="\n", end="")
        if args.table is not None:
            write_text(args.table, table)
            print(f"written: {args.table}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
