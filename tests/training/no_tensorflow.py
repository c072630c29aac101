"""`python no_tensorflow.py ARGS`: the `detect` command as on a machine without TensorFlow.

`import tensorflow` (and of any of its modules) fails as it does where the package is not
installed, and importlib.util.find_spec finds nothing; everything else is this venv's.
"""

import runpy
import sys

sys.modules["tensorflow"] = None  # import raises ModuleNotFoundError; find_spec returns None

if __name__ == "__main__":
    sys.argv = ["detect", *sys.argv[1:]]
    runpy.run_module("detect.cli", run_name="__main__", alter_sys=True)
