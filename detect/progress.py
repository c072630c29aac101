"""A progress line for long single calls (export, benchmark) that report no steps.

`elapsed_bar("exporting saved_model")` shows `exporting saved_model: 00:12 elapsed` on a
terminal, refreshed twice a second by a background thread, and nothing in a log file
(tqdm's disable=None: no bar when stderr is not a terminal). The handle's
`set_description_str` names the current stage.
"""

import contextlib
import sys
import threading

from tqdm import tqdm


@contextlib.contextmanager
def elapsed_bar(desc, interval=0.5):
    """Context manager yielding the tqdm bar; it is cleared from the terminal on exit."""
    bar = tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed} elapsed", file=sys.stderr, disable=None,
               leave=False)
    stop = threading.Event()

    def tick():
        while not stop.wait(interval):
            bar.refresh()

    thread = threading.Thread(target=tick, name="elapsed-bar", daemon=True)
    thread.start()
    try:
        yield bar
    finally:
        stop.set()
        thread.join()
        bar.close()


@contextlib.contextmanager
def label_calls(functions, bar, prefix):
    """While active, calling `functions[name]` (a dict of callables, e.g. the benchmark's
    timers) first sets the bar to `PREFIX: NAME`; the dict is restored on exit."""
    saved = dict(functions)

    def labelled(name, function):
        def call(*args, **kwargs):
            bar.set_description_str(f"{prefix}: {name}")
            return function(*args, **kwargs)

        return call

    functions.update({name: labelled(name, function) for name, function in saved.items()})
    try:
        yield
    finally:
        functions.clear()
        functions.update(saved)
