"""Check a machine for deployment: versions, providers, GPU, TensorRT, CUDA bindings, with a fix per problem.

Run it first when a robot says "libnvinfer not found" or ONNX Runtime quietly runs on the CPU.
It never fails: missing optional parts are reported (exit code 0). torch is probed in a
subprocess, so this process stays torch-free like the runtime it checks.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

from lix_deploy.cli import EXIT_OK, ToolParser, run_tool

__all__ = ["Check", "run_checks", "onnxruntime_conflict", "classify_tensorrt", "main"]

OK, INFO, WARN, MISSING, ERROR = "ok", "info", "warn", "missing", "error"
_MARKS = {OK: "ok", INFO: "--", WARN: "!!", MISSING: "--", ERROR: "XX"}
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                     "onnxruntime-training")
TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-libs",
                     "tensorrt-cu12-libs", "tensorrt-cu13-libs")


@dataclass
class Check:
    """One line of the report: what was checked, what was found, and how to fix it if it matters."""

    name: str
    status: str
    version: str = ""
    detail: str = ""
    fix: str = ""


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_versions(names: Iterable[str], lookup: Callable[[str], str | None] = _version) -> dict[str, str]:
    """{distribution: version} for those of `names` that are installed."""
    return {name: version for name in names if (version := lookup(name))}


# ---- pure decisions (tested directly) -------------------------------------------------------
def onnxruntime_conflict(installed: dict[str, str]) -> str | None:
    """The fix when several ONNX Runtime distributions share one environment, else None.

    They all install the same `onnxruntime` package directory; whichever was installed last
    wins file by file, and the CUDA / TensorRT providers silently vanish.
    """
    present = [name for name in ORT_DISTRIBUTIONS if name in installed]
    if len(present) < 2:
        return None
    keep = "onnxruntime-gpu" if "onnxruntime-gpu" in present else present[-1]
    return (f"{' and '.join(present)} are all installed and overwrite each other (providers vanish): "
            f"pip uninstall -y {' '.join(present)} && pip install {keep}")


def classify_tensorrt(version: str) -> tuple[str, str]:
    """(status, description) of a TensorRT version for this project's runtime and engine builder."""
    from lix_deploy.runtime.backends.tensorrt_common import parse_trt_version, typing_mode

    parsed = parse_trt_version(version)
    if parsed.major < 10:
        return ERROR, f"TensorRT {parsed} predates the 10.x I/O API this runtime uses"
    mode = typing_mode(parsed)
    if parsed.major == 10 and mode == "weakly-typed":
        return OK, "10.x < 10.12: weakly typed builds (BuilderFlag.FP16 / INT8 for Q/DQ models), e.g. JetPack 6"
    if parsed.major == 10:
        return OK, "10.x >= 10.12: strongly typed builds (precision comes from the ONNX)"
    return OK, f"{parsed.major}.x: strongly typed only (no BuilderFlag.FP16/INT8, no implicit INT8 calibration)"


# ---- probes -------------------------------------------------------------------------------
def check_python() -> list[Check]:
    checks = [Check("python", OK if sys.version_info >= (3, 10) else ERROR, platform.python_version(),
                    f"{sys.executable} ({platform.machine()}, {platform.system()})",
                    "" if sys.version_info >= (3, 10) else "lix-seg needs Python >= 3.10")]
    try:
        import numpy

        checks.append(Check("numpy", OK, numpy.__version__))
    except ImportError:
        checks.append(Check("numpy", ERROR, fix="pip install numpy"))
    try:
        import cv2

        checks.append(Check("opencv", OK, cv2.__version__))
    except ImportError:
        checks.append(Check("opencv", ERROR, detail="the runtime resizes with cv2",
                            fix="pip install opencv-python-headless"))
    return checks


def check_onnx() -> list[Check]:
    version = _version("onnx")
    if version:
        return [Check("onnx", OK, version, "needed for export / engine builds, not by the runtime")]
    return [Check("onnx", INFO, detail="not installed (the runtime does not need it)",
                  fix="pip install 'lix-seg[deploy]' to export or quantise")]


def check_onnxruntime(installed: dict[str, str] | None = None) -> list[Check]:
    installed = installed if installed is not None else installed_versions(ORT_DISTRIBUTIONS)
    checks = []
    conflict = onnxruntime_conflict(installed)
    if conflict:
        checks.append(Check("onnxruntime packages", ERROR, ", ".join(f"{k} {v}" for k, v in installed.items()),
                            "several ONNX Runtime distributions installed", conflict))
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError as err:
        checks.append(Check("onnxruntime", MISSING, detail=str(err),
                            fix="pip install onnxruntime (CPU) or onnxruntime-gpu (NVIDIA), never both"))
        return checks
    providers = list(ort.get_available_providers())
    distribution = ", ".join(installed) or "unknown distribution"
    checks.append(Check("onnxruntime", OK, ort.__version__, f"{distribution}; device {ort.get_device()}"))
    gpu_providers = [p for p in providers if p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")]
    fix = ""
    if "onnxruntime-gpu" in installed and not gpu_providers:
        fix = "onnxruntime-gpu is installed but has no GPU provider: " + (conflict or "reinstall onnxruntime-gpu")
    elif not gpu_providers:
        fix = "CPU only; for NVIDIA GPUs: pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
    checks.append(Check("onnxruntime providers", OK if gpu_providers else INFO, "", ", ".join(providers), fix))
    return checks


def check_torch(timeout: float = 60.0) -> list[Check]:
    """torch's version and CUDA availability, probed in a subprocess so this process never imports torch."""
    version = _version("torch")
    if not version:
        return [Check("torch", INFO, detail="not installed (only export needs it; the runtime is torch-free)")]
    code = ("import json, torch; print(json.dumps({'version': torch.__version__, 'cuda': torch.cuda.is_available(), "
            "'cuda_version': torch.version.cuda, 'devices': torch.cuda.device_count() if torch.cuda.is_available() "
            "else 0}))")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
        facts = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError, OSError) as err:
        return [Check("torch", WARN, version, f"installed but did not import cleanly ({type(err).__name__})",
                      "reinstall torch for your platform")]
    cuda = facts["cuda"]
    detail = (f"CUDA {facts['cuda_version']}, {facts['devices']} device(s)" if cuda
              else f"no CUDA ({'CPU build' if not facts['cuda_version'] else 'CUDA build, no usable GPU'})")
    return [Check("torch", OK, facts["version"], detail)]


def check_gpu(timeout: float = 15.0) -> list[Check]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return [Check("gpu", INFO, detail="nvidia-smi not found: no NVIDIA driver on this machine",
                      fix="install the NVIDIA driver to use the CUDA / TensorRT backends")]
    query = [smi, "--query-gpu=name,driver_version,compute_cap,memory.total", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=timeout)
    except (subprocess.TimeoutExpired, OSError) as err:
        return [Check("gpu", ERROR, detail=f"nvidia-smi failed ({err})", fix="check the NVIDIA driver (dmesg)")]
    if done.returncode != 0:
        return [Check("gpu", ERROR, detail=(done.stderr or done.stdout).strip()[:200],
                      fix="the NVIDIA driver does not answer: reboot or reinstall the driver")]
    gpus = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return [Check("gpu", OK, "", "; ".join(gpus) or "no GPU listed")]


def check_tensorrt() -> list[Check]:
    installed = installed_versions(TRT_DISTRIBUTIONS)
    try:
        trt = importlib.import_module("tensorrt")
    except (ImportError, OSError) as err:
        text = str(err)
        if installed or "libnvinfer" in text:
            fix = ("TensorRT's libraries did not load: put its lib directory on LD_LIBRARY_PATH or "
                   "pip install the matching tensorrt-cuXX-libs")
            return [Check("tensorrt", ERROR, ", ".join(f"{k} {v}" for k, v in installed.items()), text[:200], fix)]
        return [Check("tensorrt", MISSING, detail="not installed (the onnxruntime backend still works)",
                      fix="pip install tensorrt-cu12 from NVIDIA's index, or JetPack's python3-libnvinfer on Jetson")]
    version = getattr(trt, "__version__", "unknown")
    try:
        status, detail = classify_tensorrt(version)
    except ValueError as err:
        status, detail = WARN, str(err)
    fix = "upgrade to TensorRT >= 10" if status == ERROR else ""
    return [Check("tensorrt", status, version, detail, fix)]


def check_cuda_python() -> list[Check]:
    version = _version("cuda-python") or _version("cuda-bindings")
    if not version:
        return [Check("cuda-python", MISSING, detail="needed by the TensorRT backend for device memory",
                      fix="pip install cuda-python (major version = your CUDA major, e.g. 12.x)")]
    from lix_deploy.runtime.backends.cuda_memory import import_cudart

    try:
        cudart = import_cudart()
        error, count = cudart.cudaGetDeviceCount()
    except Exception as err:  # a broken install raises anything from ImportError to RuntimeError
        return [Check("cuda-python", ERROR, version, f"does not import: {err}",
                      "pip install --force-reinstall cuda-python matching your CUDA major")]
    if error != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorString(error)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        return [Check("cuda-python", WARN, version, f"no usable GPU: {name}",
                      "needs an NVIDIA driver at least as new as the cuda-python major version")]
    return [Check("cuda-python", OK, version, f"{count} CUDA device(s)")]


def check_pycuda() -> list[Check]:
    version = _version("pycuda")
    if not version:
        return [Check("pycuda", INFO, detail="not installed (optional; cuda-python is the default)")]
    try:
        importlib.import_module("pycuda.driver")
    except Exception as err:
        return [Check("pycuda", WARN, version, f"does not import: {str(err)[:200]}",
                      "pycuda needs the NVIDIA driver (libcuda.so); rebuild it against the installed CUDA")]
    return [Check("pycuda", OK, version, "import pycuda.driver works (never use pycuda.autoinit in a ROS node)")]


def check_runtime() -> list[Check]:
    before = set(sys.modules)
    try:
        importlib.import_module("lix_deploy.runtime")
    except Exception as err:
        return [Check("lix_deploy.runtime", ERROR, detail=f"does not import: {err}", fix="pip install -e .")]
    leaked = "torch" in sys.modules and "torch" not in before
    return [Check("lix_deploy.runtime", ERROR if leaked else OK, _version("lix-seg") or "",
                  "imported torch (it must not)" if leaked else "imports without torch")]


PROBES: tuple[Callable[[], list[Check]], ...] = (
    check_python, check_runtime, check_onnx, check_onnxruntime, check_torch, check_gpu, check_tensorrt,
    check_cuda_python, check_pycuda,
)


def run_checks(probes: Iterable[Callable[[], list[Check]]] = PROBES) -> list[Check]:
    """Every probe's checks; a probe that crashes becomes an error line, never an exception."""
    checks: list[Check] = []
    for probe in probes:
        try:
            checks += probe()
        except Exception as err:  # the doctor must report, not crash
            checks.append(Check(probe.__name__.removeprefix("check_"), ERROR,
                                detail=f"check crashed: {type(err).__name__}: {err}"))
    return checks


def format_report(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks) if checks else 0
    lines = ["LIX-Seg doctor"]
    for check in checks:
        parts = [f"  [{_MARKS.get(check.status, '??')}] {check.name:<{width}}", check.version, check.detail]
        lines.append("  ".join(part for part in parts if part))
        if check.fix:
            lines.append(f"       {'':<{width}}  fix: {check.fix}")  # under the name column
    problems = sum(c.status in (ERROR, WARN) for c in checks)
    lines.append(f"{problems} problem(s); '--' lines are optional parts that are absent.")
    return "\n".join(lines)


def build_parser() -> ToolParser:
    parser = ToolParser("doctor",
        "Report what this machine offers for deploying LIX-Seg models: Python, numpy, onnx, ONNX Runtime and its "
        "execution providers (and the onnxruntime / onnxruntime-gpu clash), torch and CUDA, the GPU, TensorRT (and "
        "whether it builds weakly or strongly typed), cuda-python and pycuda, each with a one-line fix. Always "
        "exits 0.")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON instead of text")
    return parser


def run(args: argparse.Namespace) -> int:
    checks = run_checks()
    if args.json:
        problems = [c.name for c in checks if c.status in (ERROR, WARN)]
        print(json.dumps({"checks": [asdict(c) for c in checks], "problems": problems}, indent=2))
    else:
        print(format_report(checks))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run_tool(build_parser(), argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
