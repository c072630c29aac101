"""CPU facts and the oneDNN choice made before TensorFlow starts (detect/runtime.py)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from detect import runtime

# /proc/cpuinfo excerpts. Skylake-SP: AVX-512 core, no VNNI (TF leaves oneDNN off there).
SKYLAKE = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8175M CPU @ 2.50GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8175M CPU @ 2.50GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl
"""
# Cascade Lake adds avx512_vnni: TF turns oneDNN on by itself.
CASCADE_LAKE = SKYLAKE.replace("avx512vl", "avx512vl avx512_vnni")
ZEN3 = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse sse2 avx avx2 fma\n"


def test_flags_and_model_are_read_from_the_first_processor():
    assert runtime.cpu_model(SKYLAKE) == "Intel(R) Xeon(R) Platinum 8175M CPU @ 2.50GHz"
    assert runtime.cpu_flags(SKYLAKE) == frozenset(
        "fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl".split())
    assert runtime.cpu_flags("") == frozenset()


@pytest.mark.parametrize("cpuinfo, expected", [
    (SKYLAKE, "AVX-512"),
    (CASCADE_LAKE, "AVX-512 (VNNI)"),
    (CASCADE_LAKE.replace("avx512_vnni", "avx512_vnni avx512_bf16 amx_tile"), "AVX-512 (VNNI, BF16, AMX)"),
    (ZEN3, "AVX2"),
    ("flags\t: fpu sse\n", "no AVX"),
    # avx512f alone (Knights Landing lacks bw/vl) is not the "core" set oneDNN's kernels use.
    ("flags\t: avx avx2 avx512f avx512cd\n", "AVX2"),
])
def test_isa_summary(cpuinfo, expected):
    assert runtime.isa_summary(runtime.cpu_flags(cpuinfo)) == expected


@pytest.mark.parametrize("cpuinfo, wanted", [(SKYLAKE, True), (CASCADE_LAKE, False), (ZEN3, False), ("", False)])
def test_onednn_is_wanted_only_where_tensorflow_leaves_avx512_without_it(cpuinfo, wanted):
    assert runtime.wants_onednn(runtime.cpu_flags(cpuinfo)) is wanted


def test_configure_turns_onednn_on_for_avx512_without_vnni():
    environ = {}
    assert runtime.configure(environ, SKYLAKE, machine="x86_64", tensorflow_imported=False) == "detect"
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "1"}


@pytest.mark.parametrize("environ, cpuinfo, machine, imported, decision", [
    ({"TF_ENABLE_ONEDNN_OPTS": "0"}, SKYLAKE, "x86_64", False, "user"),  # the user's choice wins
    ({}, CASCADE_LAKE, "x86_64", False, "tensorflow"),  # TF turns it on by itself
    ({}, ZEN3, "x86_64", False, "tensorflow"),  # AVX2: oneDNN measured slower, TF's choice
    ({}, SKYLAKE, "aarch64", False, "tensorflow"),
    ({}, SKYLAKE, "x86_64", True, "too late"),  # TF already read the setting
])
def test_configure_leaves_the_setting_alone(environ, cpuinfo, machine, imported, decision):
    before = dict(environ)
    assert runtime.configure(environ, cpuinfo, machine=machine, tensorflow_imported=imported) == decision
    assert environ == before


def _probe(env):
    code = ("import detect, detect.runtime as r, tensorflow; from detect.compat import onednn_enabled; "
            "print(onednn_enabled(), r.decision)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_tensorflow_follows_the_setting_made_before_it_starts():
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    assert _probe({**env, "TF_ENABLE_ONEDNN_OPTS": "0"}) == ["False", "user"]
    assert _probe({**env, "TF_ENABLE_ONEDNN_OPTS": "1"}) == ["True", "user"]
    # Unset: on with AVX-512 core (by TF where it has VNNI/BF16/AMX, else by detect).
    state, decision = _probe(env)
    flags = runtime.cpu_flags()
    if runtime.AVX512_CORE <= flags:
        assert state == "True"
    assert decision == ("detect" if runtime.wants_onednn(flags) else "tensorflow")


def test_describe_names_cpu_isa_and_onednn_state():
    line = runtime.describe()
    assert runtime.cpu_model() in line and f"x{os.cpu_count()}" in line
    assert runtime.isa_summary(runtime.cpu_flags()) in line
    assert "oneDNN on" in line or "oneDNN off" in line


def test_physical_cores_count_smt_siblings_once():
    # Two vCPUs of one hyper-threaded core (e.g. a 2-vCPU Intel cloud VM): the same core id.
    smt = "processor\t: 0\nphysical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t\t: 0\n"
    assert runtime.physical_cores(smt) == 1
    assert runtime.physical_cores(smt.replace("core id\t\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t\t: 0",
                                              "core id\t\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t\t: 1")) == 2
    assert runtime.physical_cores(SKYLAKE) is None  # no core ids: unknown


SMT_PAIR = "processor\t: 0\nphysical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t\t: 0\n"
TWO_CORES = SMT_PAIR.replace("core id\t\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t\t: 0",
                             "core id\t\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t\t: 1")


def test_threads_follow_physical_cores_only_under_smt():
    environ = {}
    assert runtime.configure_threads(environ, SMT_PAIR) == 1
    assert environ == {"TF_NUM_INTRAOP_THREADS": "1"}
    for cpuinfo in (TWO_CORES, SKYLAKE):  # one thread per core, or no core ids: TF's default
        environ = {}
        assert runtime.configure_threads(environ, cpuinfo) is None and environ == {}
    environ = {"TF_NUM_INTRAOP_THREADS": "2"}  # the user's choice wins
    assert runtime.configure_threads(environ, SMT_PAIR) is None and environ == {"TF_NUM_INTRAOP_THREADS": "2"}
    assert runtime.configure_threads({}, SMT_PAIR, tensorflow_imported=True) is None  # too late to matter


def test_guard_triton_blocks_triton_only_off_torch(monkeypatch):
    modules = {}
    monkeypatch.setattr(runtime.sys, "modules", modules)
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    runtime.guard_triton()
    assert "triton" in modules and modules["triton"] is None
    loaded = object()
    modules["triton"] = loaded  # already imported: left alone
    runtime.guard_triton()
    assert modules["triton"] is loaded
    modules.clear()
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: None)  # not installed
    runtime.guard_triton()
    assert "triton" not in modules


@pytest.mark.parametrize("backend, code", [
    # PyTorch: Keras' torch backend (torch, triton) is imported by `import detect`, before TF.
    ("torch", "import detect, tensorflow, keras; print(keras.ops.ones((2,)).sum().item())"),
    # TensorFlow: a model saved on PyTorch names Keras' torch backend; loading it imports torch.
    ("tensorflow", "import detect, tensorflow, importlib, torch; importlib.import_module('keras.src.backend.torch');"
                   " print(torch.ones(2).sum().item())"),
])
def test_torch_and_tensorflow_share_a_process(backend, code):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: make install-test")
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("2.0")
