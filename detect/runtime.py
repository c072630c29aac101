"""CPU facts, the CPU settings made before TensorFlow starts (oneDNN on AVX-512; one
intra-op thread per physical core under SMT), and the compile option of each Keras
backend (`jit_compile`).

TensorFlow's Linux x86 wheels run their oneDNN kernels (convolution, matmul, pooling,
fused ops) only on CPUs with VNNI, BF16 or AMX instructions (DefaultOneDnnPolicy in
tensorflow/core/util/port.cc); elsewhere they fall back to Eigen. AVX-512 CPUs without
those (Intel Skylake-SP/X, the first Xeon Scalable, still common in clouds) thus lose
oneDNN's AVX-512 kernels although they run them well. Measured on an AMD EPYC with
oneDNN restricted to Skylake's instructions (ONEDNN_MAX_CPU_ISA=AVX512_CORE), VGG16
Faster R-CNN at 600x800: inference 1.09 s with Eigen vs 0.84 s with oneDNN, a training
step 3.58 s vs 2.15 s. With AVX2 only, oneDNN was slower (2.27 s vs 2.02 s), so it is
left to TensorFlow's choice there.

`configure()` runs when `detect` is imported (before TensorFlow, which reads the setting
once). The user's own TF_ENABLE_ONEDNN_OPTS always wins; it is also left alone when
TensorFlow was imported first, because it can no longer take effect.
"""

import importlib.util
import os
import platform
import sys

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# AVX-512 "core" (Skylake-SP): the instruction set of oneDNN's avx512_core kernels.
AVX512_CORE = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})
# Any of these and TensorFlow turns oneDNN on by itself (port.cc).
TF_ONEDNN_FLAGS = frozenset({"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"})

# What configure() decided, for reports: "user", "detect", "tensorflow" or a reason it did nothing.
decision = None


def _read_cpuinfo():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _first_field(cpuinfo, name):
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return ""


def cpu_flags(cpuinfo=None):
    """Instruction-set flags of the first processor in /proc/cpuinfo (empty set elsewhere)."""
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    return frozenset(_first_field(text, "flags").split())


def cpu_model(cpuinfo=None):
    """The CPU's model name ("Intel(R) Xeon(R) Platinum 8175M CPU @ 2.50GHz"), or the
    platform's processor string where /proc/cpuinfo has none."""
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    return _first_field(text, "model name") or platform.processor() or platform.machine() or "unknown CPU"


def isa_summary(flags):
    """A short name of the vector instructions that matter to the kernels: "AVX-512 (VNNI,
    BF16)", "AVX-512", "AVX2", "AVX" or "no AVX"."""
    if AVX512_CORE <= flags:
        extra = [name for flag, name in (("avx512_vnni", "VNNI"), ("avx512_bf16", "BF16"), ("amx_tile", "AMX"))
                 if flag in flags]
        return "AVX-512" + (f" ({', '.join(extra)})" if extra else "")
    for flag, name in (("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return name
    return "no AVX"


def wants_onednn(flags):
    """True where detect turns oneDNN on itself: AVX-512 core without TF's own triggers."""
    return AVX512_CORE <= flags and not (TF_ONEDNN_FLAGS & flags)


def configure(environ=None, cpuinfo=None, machine=None, tensorflow_imported=None):
    """Set TF_ENABLE_ONEDNN_OPTS=1 on AVX-512 x86 Linux CPUs where TensorFlow would not.

    Returns (and keeps in `decision`) who decides: "user" (the variable was set),
    "tensorflow" (TF's own default applies), "detect" (set here), or "too late"
    (TensorFlow was imported before detect).
    """
    global decision
    environ = os.environ if environ is None else environ
    machine = (machine or platform.machine()).lower()
    if tensorflow_imported is None:
        tensorflow_imported = "tensorflow" in sys.modules
    if ONEDNN_ENV in environ:
        decision = "user"
    elif machine not in ("x86_64", "amd64") or not sys.platform.startswith("linux"):
        decision = "tensorflow"
    elif not wants_onednn(cpu_flags(cpuinfo)):
        decision = "tensorflow"
    elif tensorflow_imported:
        decision = "too late"
    else:
        environ[ONEDNN_ENV] = "1"
        decision = "detect"
    configure_threads(environ, cpuinfo, tensorflow_imported)
    return decision


THREADS_ENV = "TF_NUM_INTRAOP_THREADS"
# What configure_threads decided: "user", "physical cores", or None (TensorFlow's default).
threads_decision = None


def configure_threads(environ=None, cpuinfo=None, tensorflow_imported=False, logical=None):
    """One intra-op thread per physical core where SMT gives more logical CPUs than cores.

    TensorFlow (and oneDNN on its pool) starts one thread per logical CPU; two hyper-threads
    of one core share its AVX-512 units, so for convolutions the second adds little and the
    pair competes for cache. torch defaults to one thread per physical core, and Intel's
    TensorFlow tuning guide recommends the same. Common on Intel cloud VMs (2 vCPUs = 1
    core with AMX); not measured here (the project's AMD machine has one thread per core,
    where this changes nothing). The user's TF_NUM_INTRAOP_THREADS wins. Returns the
    thread count set, or None.
    """
    global threads_decision
    environ = os.environ if environ is None else environ
    if THREADS_ENV in environ:
        threads_decision = "user"
        return None
    cores = physical_cores(cpuinfo)
    logical = logical or _logical_cpus(cpuinfo)
    if tensorflow_imported or not cores or not logical or cores >= logical:
        threads_decision = None
        return None
    environ[THREADS_ENV] = str(cores)
    threads_decision = "physical cores"
    return cores


def _logical_cpus(cpuinfo=None):
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    count = sum(1 for line in text.splitlines() if line.partition(":")[0].strip() == "processor")
    return count or None


def guard_triton():
    """Keep PyPI's CUDA torch builds from crashing beside TensorFlow.

    Their triton extension segfaults when it loads after TensorFlow (torch 2.14.1 with
    TensorFlow 2.21; torch imports triton as torch._dynamo loads, which Keras' torch backend
    imports). On PyTorch, Keras (so torch and triton) is imported now, before anything
    imports TensorFlow. Elsewhere TensorFlow comes first, so triton is kept out of the
    process (torch then runs without it: only torch.compile's GPU kernels need triton), which
    lets a TensorFlow process load a model saved on PyTorch (its optimizer's class lives in
    Keras' torch backend). Nothing changes where triton is absent or already imported.
    """
    if os.environ.get("KERAS_BACKEND") == "torch":
        import keras  # noqa: F401
    elif "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        sys.modules["triton"] = None  # `import triton` raises ImportError; torch checks for that


def jit_compile():
    """`jit_compile` for model.compile: the whole train step under jax.jit on JAX (static
    shapes: it compiles once per canvas); TensorFlow runs its graph without XLA, whose CPU
    kernels for NMS and crop_and_resize are slower; PyTorch runs eagerly (torch.compile
    takes minutes on a detector and falls back on data-dependent ops)."""
    import keras

    return keras.backend.backend() == "jax"


def physical_cores(cpuinfo=None):
    """Physical cores in /proc/cpuinfo (distinct (physical id, core id) pairs); None where unknown.

    Fewer than os.cpu_count() means SMT (hyper-threading) siblings: 2 vCPUs of a cloud VM
    can be one core. torch runs one thread per physical core by default, TensorFlow one
    per logical CPU (TF_NUM_INTRAOP_THREADS changes it)."""
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    cores, physical = set(), "0"
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if key.strip() == "physical id":
            physical = value.strip()
        elif key.strip() == "core id":
            cores.add((physical, value.strip()))
    return len(cores) or None


def describe():
    """One line for speed reports: CPU model, count (and physical cores where SMT halves
    them), vector ISA, TF version and oneDNN state (or, on another Keras backend, that
    backend and its version)."""
    import keras

    cores = physical_cores()
    smt = f" ({cores} physical cores)" if cores and cores < (os.cpu_count() or 0) else ""
    if threads_decision == "physical cores":
        smt += f" ({THREADS_ENV}={os.environ.get(THREADS_ENV)} set by detect)"
    machine = f"{cpu_model()} x{os.cpu_count()}{smt}, {isa_summary(cpu_flags())}"
    backend = keras.backend.backend()
    if backend != "tensorflow":
        import importlib

        version = getattr(importlib.import_module(backend), "__version__", "?")
        return f"{machine}, Keras {keras.__version__} on {backend} {version}"
    import tensorflow as tf

    from detect.compat import onednn_enabled

    state = onednn_enabled()
    onednn = "unknown" if state is None else ("on" if state else "off")
    why = {"detect": " (turned on by detect for AVX-512)", "user": f" ({ONEDNN_ENV} set by the user)"}
    return f"{machine}, TF {tf.__version__}, oneDNN {onednn}{why.get(decision, '')}"
