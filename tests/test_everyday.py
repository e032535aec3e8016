"""What a user does after training: load a classifier with its scaling and class names,
predict new data, draw the curves; and the options that guard a run (gradient clipping,
running out of device memory)."""
import subprocess
import sys

import numpy as np
import pytest

import gpumlp
from gpumlp import cli
from gpumlp.classifier import Classifier


@pytest.fixture(scope="module")
def iris_like(tmp_path_factory):
    """A 3-class problem with string labels and unscaled features (offsets in the 100s),
    saved as a user would: X d0 × N."""
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0, 0, 0], [3, 3, 0, 0], [0, 3, 3, 0]], float)
    y = rng.integers(0, 3, 300)
    X = (centers[y] + rng.standard_normal((300, 4))).T * 10 + 500
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    folder = tmp_path_factory.mktemp("iris")
    np.savez(folder / "iris.npz", X=X, y=labels)
    np.savez(folder / "new.npz", X=X[:, :7])                   # no labels
    np.savez(folder / "rows.npz", X=X[:, :7].T)
    return folder, X, labels


def test_a_loaded_classifier_applies_its_scaling_and_names(iris_like, tmp_path):
    folder, X, labels = iris_like
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--data", str(folder / "iris.npz"), "--epochs", "10",
                     "--no-progress", "--out", str(out)]) == 0
    clf = Classifier.load(out, device="cpu")
    assert clf.classes.tolist() == ["setosa", "versicolor", "virginica"]
    predicted = clf.predict(X)
    assert predicted.dtype.kind == "U" and np.mean(predicted == labels) > 0.95
    # the bare network on raw features is what used to score 0.33: the scaling matters
    raw = clf.net.predict(X)
    assert np.mean(clf.classes[raw] == labels) < 0.8
    loss, acc = clf.evaluate(X, labels)
    assert acc == pytest.approx(np.mean(predicted == labels))
    Y = clf.outputs(X[:, :5], batch_size=2)
    assert Y.shape == (3, 5) and np.array_equal(clf.classes[Y.argmax(0)], predicted[:5])
    with pytest.raises(ValueError, match="pass X.T"):
        clf.predict(X.T)
    clf.save(tmp_path / "again.npz")
    again = Classifier.load(tmp_path / "again.npz", device="cpu")
    assert np.array_equal(again.predict(X), predicted)


def test_predict_needs_no_labels_and_writes_csv(iris_like, tmp_path, capsys):
    folder, X, labels = iris_like
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--data", str(folder / "iris.npz"), "--epochs", "10",
                     "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["predict", str(out), "--data", str(folder / "new.npz"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.split()
    expected = Classifier.load(out, device="cpu").predict(X[:, :7]).tolist()
    assert printed == expected
    assert cli.main(["predict", str(out), "--data", str(folder / "new.npz"), "--device", "cpu",
                     "--out", str(tmp_path / "p.csv")]) == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "sample,label" and lines[1:] == [f"{n},{label}" for n, label in enumerate(expected)]
    capsys.readouterr()
    assert cli.main(["predict", str(out), "--data", str(folder / "rows.npz"), "--device", "cpu"]) == 2
    assert "one sample per row? save X.T" in capsys.readouterr().err


def test_plot_draws_the_curves_of_a_run(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "3", "--no-progress", "--out", str(out), "--plot"]) == 0
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    (out / "curves.png").unlink()
    (out / "metrics.json").unlink()                          # an interrupted run has only metrics.jsonl
    assert cli.main(["plot", str(out)]) == 0
    assert (out / "curves.png").exists()
    capsys.readouterr()
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "no metrics.json or metrics.jsonl" in capsys.readouterr().err
    assert cli.main(["train", "--device", "cpu", "--plot"]) == 2
    assert "give --out" in capsys.readouterr().err


def test_plot_without_matplotlib_says_what_to_install(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            f"from gpumlp import cli; sys.exit(cli.main(['plot', {str(out)!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 2 and "pip install -e '.[plot]' (in the gpumlp checkout)" in p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1


def test_gradient_clipping_rescales_to_the_norm():
    """clip_norm: g · min(1, C/‖g‖) before the update, as torch.nn.utils.clip_grad_norm_."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((4, 9)), rng.integers(0, 3, 9)
    for C in (1e-3, 1e3):
        nets = [gpumlp.MLP([4, 5, 3], dtype="float64", device="cpu", seed=0) for _ in range(2)]
        grads = []
        for net in nets:
            net.backward(gpumlp.losses.cross_entropy(net.forward(X), y)[1])
            grads.append(gpumlp.to_numpy(net.grads))
        g = grads[0]
        gpumlp.SGD(0.5, clip_norm=C).step(nets[0])
        expected = nets[1].params - 0.5 * g * min(1.0, C / np.linalg.norm(g))
        np.testing.assert_allclose(nets[0].params, expected, rtol=1e-14)
        assert np.linalg.norm(nets[0].grads) == pytest.approx(min(C, np.linalg.norm(g)), rel=1e-12)
    with pytest.raises(ValueError, match="clip_norm"):
        gpumlp.SGD(0.1, clip_norm=0)


@pytest.mark.torch
def test_gradient_clipping_matches_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    rng = np.random.default_rng(1)
    g = rng.standard_normal(20)
    t = torch.tensor(g.copy(), requires_grad=True)
    t.grad = torch.tensor(g.copy())
    torch.nn.utils.clip_grad_norm_([t], 0.7)
    opt = gpumlp.SGD(1.0, clip_norm=0.7)
    mine = g.copy()
    opt._clip(gpumlp.get_backend("cpu"), mine, np.empty((1, 1)))
    np.testing.assert_allclose(mine, t.grad.numpy(), rtol=1e-6)        # torch adds 1e-6 to the norm


def test_running_out_of_device_memory_names_the_batch_size(tmp_path, capsys, monkeypatch):
    """A CuPy OutOfMemoryError in a step (simulated: this machine has no GPU) ends the run with
    exit 1, a message naming the batch size, and the last good epoch kept."""
    from gpumlp.engine import Trainer

    class OutOfMemoryError(Exception):          # what cupy.cuda.memory raises, by name
        pass
    real, calls = Trainer.step, {"n": 0}

    def step(*args, **kw):
        calls["n"] += 1
        if calls["n"] > 2 * 45 + 3:              # in epoch 3 (45 steps an epoch at batch 32)
            raise OutOfMemoryError("out of memory allocating 1,073,741,824 bytes")
        return real(*args, **kw)
    monkeypatch.setattr(Trainer, "step", step)
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--epochs", "5", "--no-progress", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "ran out of memory training at batch size 32" in err and "smaller batch size" in err
    assert "the last good epoch, 2, is saved" in err


def test_the_public_api_is_exported():
    for name in ("MLP", "SGD", "fit", "evaluate", "Classifier", "TrainState", "Standardizer", "save", "load",
                 "losses", "noise", "to_numpy", "get_backend", "DeviceUnavailableError", "TrainingDiverged"):
        assert hasattr(gpumlp, name) and name in gpumlp.__all__, name


def test_labels_with_commas_survive_the_csv_and_classes_must_be_sorted(tmp_path):
    import csv
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    X = (np.array([[0.0, 0.0], [4.0, 4.0]])[y] + rng.standard_normal((80, 2))).T
    names = np.array(["cat, small", 'dog "big"'])[y]
    np.savez(tmp_path / "d.npz", X=X, y=names)
    out = tmp_path / "run"
    assert cli.main(["train", "--device", "cpu", "--data", str(tmp_path / "d.npz"), "--epochs", "5",
                     "--no-progress", "--out", str(out)]) == 0
    assert cli.main(["predict", str(out), "--data", str(tmp_path / "d.npz"), "--device", "cpu",
                     "--out", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["sample", "label"] and {r[1] for r in rows[1:]} <= set(names)
    clf = Classifier.load(out, device="cpu")
    with pytest.raises(ValueError, match="sorted"):
        Classifier(clf.net, clf.scaler, clf.classes[::-1])


def test_the_sklearn_classifier_refuses_a_regression_loss():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    from gpumlp.sklearn import MLPClassifier
    with pytest.raises(ValueError, match="for a classifier"):
        MLPClassifier(loss="squared_error", max_iter=1).fit(np.eye(4), [0, 1, 0, 1])
