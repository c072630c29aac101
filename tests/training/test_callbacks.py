"""Our own training callbacks on a stand-in model: history rows, LR schedules, time budget."""

import csv
import math

import keras
import pytest

from detect.training import callbacks as cbs


class FakeModel:
    def __init__(self, lr=0.01):
        self.optimizer = keras.optimizers.SGD(learning_rate=lr)
        self.optimizer.iterations.assign(0)
        self.stop_training = False


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_history_columns_that_appear_later_join_the_header(tmp_path):
    path = str(tmp_path / "history.csv")
    history = cbs.HistoryCSV(path)
    history.set_model(FakeModel())
    history.on_epoch_begin(0)
    history.on_epoch_end(0, {"loss": 1.0})
    history.on_epoch_begin(1)
    history.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.7})  # validation every 2 epochs
    rows = read(path)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert rows[0]["val_loss"] == "" and float(rows[1]["val_loss"]) == 0.7
    assert float(rows[1]["loss"]) == 0.5


def test_history_resumed_run_drops_rows_it_runs_again(tmp_path):
    path = str(tmp_path / "history.csv")
    first = cbs.HistoryCSV(path)
    first.set_model(FakeModel())
    for epoch in range(3):
        first.on_epoch_begin(epoch)
        first.on_epoch_end(epoch, {"loss": 3.0 - epoch})
    resumed = cbs.HistoryCSV(path)
    resumed.set_model(FakeModel())
    resumed.on_epoch_begin(2)  # epochs 0 and 1 finished before the crash; 2 runs again
    resumed.on_epoch_end(2, {"loss": 0.25})
    rows = read(path)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert float(rows[2]["loss"]) == 0.25


def test_linear_warmup_then_cosine_by_steps():
    model = FakeModel(lr=0.1)
    warmup = cbs.LinearWarmup(0.1, steps=10, start_factor=0.0)
    cosine = cbs.CosineDecay(0.1, total_steps=30, warmup_steps=10)
    for cb in (warmup, cosine):
        cb.set_model(model)
        cb.on_train_begin()
    lr = model.optimizer.learning_rate

    def at(step):
        model.optimizer.iterations.assign(step)
        warmup.on_train_batch_begin(0)
        cosine.on_train_batch_begin(0)
        return float(lr.numpy())

    assert at(0) == pytest.approx(0.0)
    assert at(5) == pytest.approx(0.05)  # halfway through warm-up: 0.1 * 5/10
    assert at(10) == pytest.approx(0.1)
    # 10 of the 20 decay steps done: 0.5 * 0.1 * (1 + cos(pi / 2)) = 0.05
    assert at(20) == pytest.approx(0.05, abs=1e-6)
    assert at(30) == pytest.approx(0.0, abs=1e-7)
    assert at(25) == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.75)), abs=1e-6)


def test_time_budget_stops_before_an_epoch_would_overrun(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(cbs.time, "monotonic", lambda: clock[0])
    model = FakeModel()
    budget = cbs.TimeBudget(minutes=1.0)  # 60 s
    budget.set_model(model)
    budget.on_train_begin()
    for epoch, length in enumerate([20.0, 25.0]):
        budget.on_epoch_begin(epoch)
        clock[0] += length
        budget.on_epoch_end(epoch)
    # 45 s used; the longest epoch took 25 s: 45 + 25 > 60, so no third epoch.
    assert model.stop_training
