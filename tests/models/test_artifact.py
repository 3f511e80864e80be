import pytest
import torch

import models.artifact as artifact
from models import ArtifactError, ModelNotFoundError, load_model, save_model
from models.testing import tiny_model


def test_loaded_model_is_in_eval_mode_without_gradients(tmp_path):
    path = save_model(tiny_model(dropout=0.1).train(), tmp_path / "m.pt")
    model = load_model(path)
    assert all(not m.training for m in model.modules())
    assert all(not p.requires_grad for p in model.parameters())


def test_round_trip_keeps_weights_and_train_split_statistics(tmp_path):
    original = tiny_model(seed=5)
    model = load_model(save_model(original, tmp_path / "m.pt", metadata={"run": "x"}))
    for (k, a), (_, b) in zip(original.state_dict().items(), model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    torch.testing.assert_close(model.stats.action_std, original.stats.action_std)
    assert model.stats.provenance["split"] == "train"
    assert model.describe()["stats_provenance"]["dataset"] == "synthetic"
    assert model.metadata == {"run": "x"}


def test_artifact_without_statistics_is_refused(tmp_path):
    path = save_model(tiny_model(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    del payload["stats"]
    torch.save(payload, path)
    with pytest.raises(ArtifactError, match="no action/proprio normalisation statistics"):
        load_model(path)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_are_refused_not_executed(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": artifact.FORMAT, "obj": Evil()}, path)
    with pytest.raises(ArtifactError, match="weights-only"):
        load_model(path)
    assert "pwned" not in capsys.readouterr().out


def test_missing_files_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError):
        load_model(tmp_path / "nope.pt")
    monkeypatch.setattr(artifact, "DEFAULT_MODEL_PATH", tmp_path / "default.pt")
    with pytest.raises(ModelNotFoundError, match="default model is missing"):
        load_model(None)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    path = save_model(tiny_model(seed=1), tmp_path / "m.pt")
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_model(tiny_model(seed=2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_artifact_with_statistics_of_unknown_origin_is_refused(tmp_path):
    path = save_model(tiny_model(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["stats"]["provenance"] = {"dataset": "d", "split": "all"}  # relabelled, rule unknown
    torch.save(payload, path)
    with pytest.raises(ArtifactError, match="unknown origin"):
        load_model(path)
