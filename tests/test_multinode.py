"""Past one machine: two local "nodes" of one process each, over gloo on 127.0.0.1 only,
train the model one process trains (same data order), and node 1 writes nothing."""

from __future__ import annotations

import socket
import threading

import pytest
import torch
from helpers_train import demo_run_folder

from skinhelpers.model import checkpoints
from skinhelpers.train import experiment, launch
from skinhelpers.train.trainer import Trainer

# loopback only: gloo and the rendezvous bind to 127.0.0.1
LOOPBACK = {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
NO_AUGMENTATION = {"preset": "none", "cutmix_alpha": 0.0, "mixup_alpha": 0.0, "mix_prob": 0.0}
# a network without BatchNorm (ConvNeXt: LayerNorm), no dropout, no augmentation, a seeded
# shuffle: two processes with 8 images each step like one process with the 16 together
RECIPE = {"arch": "convnext_atto:scratch", "drop_rate": 0.0, "balance_power": 0.0, "seed": 3}
RECIPE |= {"epochs": 1, "lr": 2e-3, "ema": True, "workers": 0, "patience": 0, "tensorboard": False}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(folder) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_rendezvous_arguments():
    assert launch.rendezvous_args(1, 0, "", "x") == ["--standalone"]
    args = launch.rendezvous_args(2, 1, "10.0.0.1:29500", "skinlab-run")
    assert "--rdzv-backend=c10d" in args and "--rdzv-endpoint=10.0.0.1:29500" in args
    assert any("is_host=0" in a for a in args)
    assert any("is_host=1" in a for a in launch.rendezvous_args(2, 0, "h:1", "x"))
    for bad in ("10.0.0.1", "10.0.0.1:port", ":29500"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            launch.rendezvous_args(2, 0, bad, "x")
    with pytest.raises(ValueError, match="node_rank"):
        launch.rendezvous_args(2, 2, "h:1", "x")


@pytest.mark.slow
def test_two_nodes_over_gloo_train_what_one_process_trains(demo_manifest, tmp_path):
    # each "machine" has its own run folder of the same name (what 01-05 wrote there)
    runs = [demo_run_folder(demo_manifest, tmp_path / f"node{r}" / "run") for r in (0, 1)]
    cfg8 = experiment.make_config({**RECIPE, "batch_size": 8}, None)
    specs = [
        launch.write_launch_config(
            run / "train_config.json", cfg8, run, run, 32, 64, NO_AUGMENTATION
        )
        for run in runs
    ]
    node1_before = _files(runs[1])
    endpoint, results, errors = f"127.0.0.1:{_free_port()}", {}, []

    def node(rank: int) -> None:
        try:
            results[rank] = launch.launch(
                specs[rank],
                nproc=1,
                nnodes=2,
                node_rank=rank,
                rdzv_endpoint=endpoint,
                local_addr="127.0.0.1",
                extra_env=LOOPBACK,
            )
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=node, args=(r,)) for r in (1, 0)]  # 1 waits for 0
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    assert results[1] == {"node_rank": 1}
    two = results[0]
    assert two["epochs_run"] == 1 and len(two["rank_checksums"]) == 2
    assert two["rank_checksums"][0] == pytest.approx(two["rank_checksums"][1], abs=1e-9)
    # node 1 (rank 1 of the two, or rank 0 of the rendezvous: its order is by host) wrote
    # nothing into its run folder; node 0 wrote the results
    assert _files(runs[1]) == node1_before
    assert {"history.csv", "train_result.json"} <= {p.name for p in runs[0].iterdir()}
    assert (runs[0] / "checkpoints" / "last.pt").exists()

    # one process, one batch of 16 per step, the same shuffle
    one = demo_run_folder(demo_manifest, tmp_path / "one")
    data = experiment.load_data(one, 32, 0, RECIPE["seed"], 64, NO_AUGMENTATION)
    cfg16 = experiment.make_config({**RECIPE, "batch_size": 16}, None)
    start = Trainer(cfg16, data.train_ds, data.val_ds, data.train_labels, data.meta, one / "x")
    initial = {k: v.clone() for k, v in start.model.state_dict().items()}
    res = experiment.train(cfg16, data, one)
    assert res["n_train"] == two["n_train"]

    a = checkpoints.load_checkpoint(runs[0] / "checkpoints" / "last.pt")
    b = checkpoints.load_checkpoint(one / "checkpoints" / "last.pt")
    moved, apart = 0.0, 0.0
    for k, v in b["state_dict"].items():
        if v.is_floating_point():
            moved = max(moved, float((v - initial[k]).abs().max()))
            apart = max(apart, float((v - a["state_dict"][k]).abs().max()))
    print(f"largest change by training {moved:.2e}, two nodes vs one process {apart:.2e}")
    assert moved > 1e-3 and apart < 1e-5
    for k, v in b["ema_state_dict"].items():
        assert torch.allclose(v, a["ema_state_dict"][k], atol=1e-5), k
    assert b["history"][0]["train_loss"] == pytest.approx(a["history"][0]["train_loss"], rel=1e-5)
