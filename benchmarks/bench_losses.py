"""Cost of every distillation loss relative to one student training step, and ARFD memory vs tokens.

Prints, per model config (tiny: width 0.25; full: width 1.0), the best-of-N forward+backward time
of each loss on real student / teacher outputs, as a ratio to one student forward+backward
(with L_H). Teacher outputs are precomputed (they are cached or run without grad in training),
so the ratios are the loss arithmetic alone. Then the memory ARFD holds for backward at the
default config as the token count grows: linear in n for the default linear CKA, quadratic for
the token-mode / RBF options.

    python benchmarks/bench_losses.py                   # 128x256, batch 4, tiny and full
    python benchmarks/bench_losses.py --configs tiny --repeats 3
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from lix_train.data.classes import VKITTI2_NUM_CLASSES
from lix_train.distillers.config import DistillConfig
from lix_train.losses.arfd import ARFDConfig, arfd_loss, arfd_stage_loss
from lix_train.losses.at import at_loss
from lix_train.losses.ce import pixel_cross_entropy
from lix_train.losses.cwd import cwd_loss
from lix_train.losses.dkd import dkd_loss
from lix_train.losses.dwld import DWLDLoss
from lix_train.losses.kd import kd_loss

MODEL_CONFIGS = {"tiny": {"width": 0.25}, "full": {"width": 1.0}}
BUDGET = 0.30  # the goal: the whole LIX loss under 30 % of a student step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_times(fns: dict[str, Callable[[], None]], repeats: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Best wall time in seconds of each fn, measured round-robin.

    The minimum, not the mean: on a shared machine other processes only ever add time. Round
    robin: a burst of load hits one sample of every item rather than all samples of one item,
    so the ratios stay fair.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def loss_suite(cfg: DistillConfig, num_classes: int, device: torch.device) -> dict[str, Callable]:
    """name -> f(student_logits, student_feats, teacher_logits, teacher_feats, target) -> loss."""
    dwld_adv = DWLDLoss(cfg.dwld, num_classes).to(device)
    dwld_cheap = DWLDLoss(replace(cfg.dwld, layers=2, hidden=16), num_classes).to(device)
    dwld_conf = DWLDLoss(replace(cfg.dwld, mode="confidence")).to(device)
    a = cfg.arfd
    token_mode = ARFDConfig(mode="token")
    return {
        "ce (L_H)": lambda sl, sf, tl, tf, y: pixel_cross_entropy(sl, y),
        "kd": lambda sl, sf, tl, tf, y: kd_loss(sl, tl, y, cfg.kd.temperature),
        "dkd": lambda sl, sf, tl, tf, y: dkd_loss(sl, tl, y, cfg.dkd.alpha, cfg.dkd.beta, cfg.dkd.temperature),
        "cwd": lambda sl, sf, tl, tf, y: cwd_loss(sl, tl, 4.0),
        "at": lambda sl, sf, tl, tf, y: at_loss(sf, tf, cfg.at.stages),
        "dwld adversarial (default DWC 3x64)": lambda sl, sf, tl, tf, y: dwld_adv(sl, tl, y),
        "dwld adversarial (DWC 2x16)": lambda sl, sf, tl, tf, y: dwld_cheap(sl, tl, y),
        "dwld confidence": lambda sl, sf, tl, tf, y: dwld_conf(sl, tl, y),
        "arfd (default: channel, laplace, linear CKA)": lambda sl, sf, tl, tf, y: arfd_loss(sf, tf, a),
        "arfd token mode": lambda sl, sf, tl, tf, y: arfd_loss(sf, tf, token_mode),
        "LIX = dwld + arfd (defaults)": lambda sl, sf, tl, tf, y: dwld_adv(sl, tl, y) + arfd_loss(sf, tf, a),
    }


def bench_config(name: str, args: argparse.Namespace, device: torch.device) -> None:
    from lix_train.models import create_model

    model_kwargs = dict(MODEL_CONFIGS[name], num_classes=args.num_classes)
    student = create_model("student", **model_kwargs).to(device).train()
    teacher = create_model("teacher", x_channels=3, **model_kwargs).to(device).eval()
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.height, args.width)
    image = torch.randn(shape, generator=g).to(device)
    x = torch.randn(shape, generator=g).to(device)
    target = torch.randint(0, args.num_classes, (args.batch, args.height, args.width), generator=g).to(device)

    def student_step():
        student.zero_grad(set_to_none=True)
        logits, _ = student(image)
        pixel_cross_entropy(logits, target).backward()

    with torch.no_grad():
        t_logits, t_feats = teacher(image, x)
        s_logits, s_feats = student(image)
    sl = s_logits.detach().clone().requires_grad_(True)
    sf = [f.detach().clone().requires_grad_(True) for f in s_feats]

    def loss_step(fn):
        return lambda: fn(sl, sf, t_logits, t_feats, target).backward()

    def teacher_forward():
        with torch.no_grad():
            teacher(image, x)

    fns = {"student step": student_step, "teacher forward": teacher_forward}
    fns.update({name: loss_step(fn) for name, fn in loss_suite(DistillConfig(), args.num_classes, device).items()})
    times = best_times(fns, args.repeats, args.warmup, device)
    step, teacher_time = times.pop("student step"), times.pop("teacher forward")
    n_params = sum(p.numel() for p in student.parameters())
    print(f"\n== {name}: student {n_params / 1e6:.2f} M params, width {MODEL_CONFIGS[name]['width']}, "
          f"input {args.batch}x3x{args.height}x{args.width}, stage channels student {[f.shape[1] for f in s_feats]} "
          f"teacher {[f.shape[1] for f in t_feats]}")
    print(f"student forward+backward (with L_H): {step * 1e3:8.1f} ms   (teacher forward, no grad: "
          f"{teacher_time * 1e3:.1f} ms = {teacher_time / step:.2f}x; skipped when cached)")
    print(f"{'loss (forward+backward)':48s} {'ms':>8s} {'x step':>8s}")
    for loss_name, seconds in times.items():
        flag = "  <- over budget" if loss_name.startswith("LIX") and seconds / step > BUDGET else ""
        print(f"{loss_name:48s} {seconds * 1e3:8.1f} {seconds / step:8.2f}{flag}")


def saved_bytes(fn: Callable[[], torch.Tensor]) -> tuple[int, int]:
    """(bytes held for backward, largest single saved tensor) while building fn()'s graph."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    loss.backward()
    return sum(storages.values()), max(storages.values(), default=0)


def bench_memory(args: argparse.Namespace, device: torch.device) -> None:
    c_s, c_t = args.memory_channels
    print(f"\n== ARFD memory held for backward vs tokens per image (one stage, batch {args.batch}, "
          f"C_s={c_s}, C_t={c_t}; no token cap)")
    header = f"{'tokens n':>9s} {'default MiB':>12s} {'max tensor':>11s}"
    if args.quadratic:
        header += f" {'token-mode MiB':>15s} {'rbf-CKA MiB':>12s}"
    print(header)
    g = torch.Generator().manual_seed(0)
    for n in args.tokens:
        side = int(n**0.5)
        s = torch.randn(args.batch, c_s, side, n // side, generator=g).to(device).requires_grad_(True)
        t = torch.randn(args.batch, c_t, side, n // side, generator=g).to(device)
        row = []
        configs = [ARFDConfig(stages=(0,), max_tokens=10**9)]
        if args.quadratic and n <= args.quadratic_max:
            configs += [ARFDConfig(stages=(0,), max_tokens=10**9, mode="token"),
                        ARFDConfig(stages=(0,), max_tokens=10**9, kernel="none", cka_kernel="rbf")]
        for cfg in configs:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            total, largest = saved_bytes(lambda: arfd_stage_loss(s, t, cfg))
            peak = f" (cuda peak {torch.cuda.max_memory_allocated() / 2**20:.1f})" if device.type == "cuda" else ""
            row.append((total, largest, peak))
        line = f"{n:9d} {row[0][0] / 2**20:12.2f} {row[0][1] / 2**20:11.2f}{row[0][2]}"
        for total, _, peak in row[1:]:
            line += f" {total / 2**20:15.2f}{peak}"
        print(line)
    print("default: memory grows linearly with n (the largest tensors are the [n, C] tokens and the "
          "[C_t, C_s] kernel); the n x n options grow quadratically.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(MODEL_CONFIGS), choices=list(MODEL_CONFIGS),
                        help="Model configs to time (tiny = width 0.25, full = width 1.0).")
    parser.add_argument("--height", type=int, default=128, help="Input height in pixels.")
    parser.add_argument("--width", type=int, default=256, help="Input width in pixels.")
    parser.add_argument("--batch", type=int, default=4, help="Batch size.")
    parser.add_argument("--num-classes", type=int, default=VKITTI2_NUM_CLASSES,
                        help=f"Classes ({VKITTI2_NUM_CLASSES} = vKITTI2).")
    parser.add_argument("--repeats", type=int, default=10, help="Timed repetitions per measurement (best reported).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed calls before timing.")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave torch's default).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="Device to run on.")
    parser.add_argument("--tokens", type=int, nargs="+", default=[500, 1000, 2000, 4000, 8000, 16000],
                        help="Token counts for the ARFD memory sweep.")
    parser.add_argument("--memory-channels", type=int, nargs=2, default=[128, 256], metavar=("C_S", "C_T"),
                        help="Student and teacher channels in the memory sweep.")
    parser.add_argument("--quadratic", action=argparse.BooleanOptionalAction, default=True,
                        help="Also measure the O(n^2) options (token mode, RBF CKA) in the memory sweep.")
    parser.add_argument("--quadratic-max", type=int, default=4000, help="Largest n for the O(n^2) options.")
    parser.add_argument("--skip-timing", action="store_true", help="Only run the memory sweep.")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if not args.skip_timing:
        for name in args.configs:
            bench_config(name, args, device)
    bench_memory(args, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
