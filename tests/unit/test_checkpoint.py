"""checkpoint.pt is loaded without running code: tensors and plain data only (real torch, no model needed)."""

import pickle

import numpy as np
import pytest

from llkd_edge.config import TrainConfig
from llkd_edge.errors import ModelError
from llkd_edge.student.selection import ThresholdState
from llkd_edge.student.checkpoint import CHECKPOINT, EpochStats, load_checkpoint, save_checkpoint, selected_mask

torch = pytest.importorskip("torch")


class _Payload:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_crafted_pickle_in_checkpoint_pt_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / CHECKPOINT).write_bytes(pickle.dumps({"model": {}, "plain": _Payload(marker)}, protocol=2))
    with pytest.raises(ModelError, match="unsafe to load"):
        selected_mask(tmp_path)
    assert not marker.exists()
    torch.save({"model": {}, "plain": _Payload(marker)}, tmp_path / CHECKPOINT)  # the same inside torch's zip format
    with pytest.raises(ModelError, match="unsafe to load"):
        load_checkpoint(tmp_path / CHECKPOINT)
    assert not marker.exists()


def test_a_checkpoint_round_trips_every_piece_of_state_exactly(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = ThresholdState.initial(3, momentum=0.9, teacher_prior=np.float64(0.61))
    ever = np.array([True, False, True, False, False])
    rng = np.random.default_rng(7)
    rng.random(3)
    stats = [EpochStats(epoch=0, steps=1, selected=2, seen=5, ever_selected=2, mean_loss=np.float64(0.5),
                        teacher_thresholds=[0.5, 0.6, 0.7], student_thresholds=[0.1, 0.2, 0.3], seconds=1.25)]
    save_checkpoint(tmp_path / CHECKPOINT, torch, model, optimizer, scheduler, state, ever, stats, 0, rng,
                     TrainConfig(threads=1))
    saved = load_checkpoint(tmp_path / CHECKPOINT)
    assert saved["epoch"] == 0
    assert saved["ever_selected"].tolist() == ever.tolist()
    assert ThresholdState.from_dict(saved["selection_state"]).to_dict() == state.to_dict()
    assert [EpochStats(**s) for s in saved["stats"]] == stats
    again = np.random.default_rng(0)
    again.bit_generator.state = saved["numpy_rng"]
    assert again.random() == rng.random()
    assert torch.equal(saved["torch_rng"], torch.get_rng_state())
    assert all(torch.equal(saved["model"][k], v) for k, v in model.state_dict().items())
    assert saved["optimizer"]["state"][0]["exp_avg"].equal(optimizer.state_dict()["state"][0]["exp_avg"])
    assert saved["config"]["threads"] == 1


@pytest.mark.parametrize("plain", [
    {"pool_size": 3, "ever_selected": [5], "epoch": 0},  # an index past the pool (was an IndexError traceback)
    {"pool_size": 3, "ever_selected": [-1], "epoch": 0},
    {"pool_size": "many", "ever_selected": [], "epoch": 0},
    {"pool_size": 3, "ever_selected": [[0]], "epoch": 0},
    {"ever_selected": [], "epoch": 0},
    {"pool_size": 3, "ever_selected": [], "epoch": "last"},
    {"pool_size": 3, "ever_selected": [], "epoch": "3"},  # passed int() but failed later at epoch + 1
])
def test_a_checkpoint_with_a_malformed_plain_part_is_one_error_line(tmp_path, plain):
    import json

    torch.save({"model": {}, "plain": json.dumps(plain)}, tmp_path / CHECKPOINT)
    with pytest.raises(ModelError, match="malformed"):
        load_checkpoint(tmp_path / CHECKPOINT)


def test_a_resume_on_another_pool_or_device_is_refused_before_any_step(tmp_path):
    from llkd_edge.errors import UserError
    from llkd_edge.student.checkpoint import check_resumable
    from llkd_edge.student.pool import Pool

    pool = Pool(["a", "b", "c"], np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    grown = Pool(["a", "b", "c", "d"], np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]))
    relabelled = Pool(["a", "b", "c"], np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]))
    assert pool.fingerprint() not in (grown.fingerprint(), relabelled.fingerprint())
    saved = {"ever_selected": np.zeros(3, bool), "pool_sha256": pool.fingerprint(), "device": "cpu"}
    check_resumable(tmp_path, saved, 3, pool.fingerprint(), "cpu")  # the same run: fine
    with pytest.raises(UserError, match="another pool"):
        check_resumable(tmp_path, saved, 4, grown.fingerprint(), "cpu")
    with pytest.raises(UserError, match="another pool"):
        check_resumable(tmp_path, saved, 3, relabelled.fingerprint(), "cpu")
    with pytest.raises(UserError, match="resume with --device cpu"):
        check_resumable(tmp_path, saved, 3, pool.fingerprint(), "cuda")
    old = {"ever_selected": np.zeros(3, bool)}  # a checkpoint from before either was recorded: size only
    check_resumable(tmp_path, old, 3, relabelled.fingerprint(), "cuda")
    with pytest.raises(UserError, match="another pool"):
        check_resumable(tmp_path, old, 2, relabelled.fingerprint(), "cpu")
