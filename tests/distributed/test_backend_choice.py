"""Choosing the engine from the launcher, and the pieces of data parallelism that need no second process."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers.runs import tiny_args, train

from scorch import dist
from scorch.batches import EpochSampler
from scorch.errors import ScorchError

LAUNCHER_VARS = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK", "WORLD_SIZE", "RANK", "HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE",
                 "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS",
                 "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "SLURM_JOB_NAME", "SLURM_JOB_ID", "SLURM_STEP_NODELIST",
                 "SLURM_JOB_NODELIST", "SLURM_NODELIST")


@pytest.fixture
def no_launcher(monkeypatch):
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def no_horovod(no_launcher):
    """Horovod as if it were not installed: `import horovod.torch` fails."""
    no_launcher.setitem(sys.modules, "horovod.torch", None)
    return no_launcher


@pytest.mark.parametrize("env, expected", [
    ({}, ("", 1)),
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "1"}, ("mpirun", 4)),
    ({"PMI_SIZE": "3"}, ("mpirun", 3)),
    ({"HOROVOD_SIZE": "2", "HOROVOD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}, ("horovodrun", 2)),
    ({"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "8", "LOCAL_RANK": "0"}, ("torchrun", 8)),
    # a task srun started, and the batch script around it (which has SLURM_PROCID and SLURM_NTASKS too)
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_NAME": "train"}, ("srun", 2)),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "train"}, ("", 1)),
    ({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_NAME": "interactive"}, ("", 1)),
])
def test_launcher_is_read_from_the_environment(no_launcher, env, expected):
    # GIVEN the variables a launcher sets
    for name, value in env.items():
        no_launcher.setenv(name, value)
    # WHEN scorch looks at them THEN it names the launcher and the number of processes
    assert dist.launcher() == expected


def test_auto_without_a_launcher_is_one_process(no_launcher):
    # GIVEN no launcher WHEN the engine is chosen automatically THEN it is the single-process one
    engine = dist.create("auto")
    assert engine.name == "none" and engine.size == 1 and engine.is_global_zero


def test_auto_under_mpirun_without_horovod_names_the_install_command(no_horovod):
    # GIVEN two processes started by mpirun and no Horovod
    no_horovod.setenv("OMPI_COMM_WORLD_SIZE", "2")
    # WHEN the engine is chosen automatically
    with pytest.raises(ScorchError) as err:
        dist.create("auto")
    # THEN it refuses (rather than train two copies into one folder) and says how to install Horovod
    assert "mpirun started 2 processes" in err.value.message
    assert "bash scripts/install-horovod.sh" in err.value.message


def test_asking_for_horovod_without_it_names_the_install_command(no_horovod):
    with pytest.raises(ScorchError, match="--backend horovod:.*bash scripts/install-horovod.sh"):
        dist.create("horovod")


def test_backend_none_under_a_launcher_is_refused(no_launcher):
    # GIVEN mpirun started 2 processes WHEN the user forces --backend none THEN scorch refuses with the fix
    no_launcher.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(ScorchError, match="--backend none: mpirun started 2 processes.*--backend auto"):
        dist.create("none")


def test_backend_torch_outside_torchrun_says_how_to_launch(no_launcher):
    with pytest.raises(ScorchError, match="torchrun --nproc-per-node N --no-python scorch-train"):
        dist.create("torch")


def test_gpus_with_a_cpu_only_horovod_say_how_to_rebuild(no_launcher):
    # GIVEN Horovod built for CPUs only (scripts/install-horovod.sh without HOROVOD_GPU_OPERATIONS)
    hvd = pytest.importorskip("horovod.torch", reason="Horovod not installed: bash scripts/install-horovod.sh")
    if hvd.cuda_built():
        pytest.skip("this Horovod was built with CUDA")
    # WHEN a run asks for GPUs THEN it stops before training, naming the rebuild command
    with pytest.raises(ScorchError, match="built for CPUs only.*HOROVOD_GPU_OPERATIONS=NCCL bash scripts/install-horovod.sh"):
        dist.create("horovod", "cuda")


def test_scorch_train_under_mpirun_without_horovod_fails_in_one_line(no_horovod, tmp_path, capsys):
    # GIVEN scorch-train started as one of 2 mpirun ranks, without Horovod
    no_horovod.setenv("OMPI_COMM_WORLD_SIZE", "2")
    # WHEN it starts
    code = train(tiny_args(tmp_path / "run", "--epochs", "1", "--no-telemetry", "--no-tensorboard"))
    # THEN it exits 2 with one line naming the install command, no traceback, and no run folder
    err = capsys.readouterr().err
    assert code == 2
    assert "scorch-train: error:" in err and "bash scripts/install-horovod.sh" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("length, size", [(10, 2), (11, 2), (7, 3), (2, 4)])
def test_evaluation_shares_cover_the_set_exactly_once(length, size):
    # GIVEN the unpadded samplers of every rank
    shares = [list(EpochSampler(length, False, 0, rank, size, pad=False)) for rank in range(size)]
    # THEN together they hold every sample once, and each says its own length
    assert sorted(i for share in shares for i in share) == list(range(length))
    assert [len(EpochSampler(length, False, 0, rank, size, pad=False)) for rank in range(size)] == [len(s) for s in shares]


@pytest.mark.parametrize("length, size", [(10, 2), (11, 2), (7, 3), (2, 4)])
def test_training_shares_are_padded_to_equal_length(length, size):
    # GIVEN the training samplers of every rank THEN they are equally long (equal steps: no rank waits alone)
    shares = [list(EpochSampler(length, True, 5, rank, size)) for rank in range(size)]
    assert len({len(share) for share in shares}) == 1
    assert set(i for share in shares for i in share) == set(range(length))


def test_averaged_optimizer_averages_once_per_step_and_keeps_the_users_state():
    # GIVEN a user's SGD with momentum wrapped by an averager that counts its calls
    model = torch.nn.Linear(3, 1)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    calls = []
    wrapped = dist.AveragedOptimizer(sgd, lambda: calls.append(1))
    # WHEN one step is taken after an explicit average (as the loop does before the AMP scaler)
    wrapped.zero_grad()
    model(torch.ones(2, 3)).sum().backward()
    wrapped.synchronize()
    wrapped.step()
    # THEN the gradients were averaged once, and the user's optimizer holds the state checkpoints save
    assert calls == [1]
    assert wrapped.state_dict()["state"] == sgd.state_dict()["state"] and len(sgd.state) == 2
    assert wrapped.param_groups is sgd.param_groups
    # AND a step the scaler skipped (zero_grad without step) does not leave the next one unaveraged
    wrapped.synchronize()
    wrapped.zero_grad()
    model(torch.ones(2, 3)).sum().backward()
    wrapped.step()
    assert calls == [1, 1, 1]


def test_scale_lr_multiplies_rates_and_scheduler_bases():
    # GIVEN an optimizer with two groups and a step scheduler
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}])
    scheduler = torch.optim.lr_scheduler.LambdaLR(sgd, lambda epoch: 1.0)
    # WHEN scaled for 4 ranks
    dist.scale_learning_rate(sgd, scheduler, 4)
    sgd.step()
    scheduler.step()
    # THEN every rate is 4 times larger, and the scheduler does not undo it
    assert [g["lr"] for g in sgd.param_groups] == pytest.approx([0.4, 0.04])


def test_share_from_rank_zero_alone_runs_the_work_and_keeps_its_errors():
    engine = dist.Single()
    assert dist.share_from_rank_zero(engine, lambda: 41 + 1, for_others=lambda _: None) == 42

    def broken():
        raise ScorchError("checkpoint x: no such file", exit_code=2)

    with pytest.raises(ScorchError, match="no such file"):
        dist.share_from_rank_zero(engine, broken)


@pytest.mark.parametrize("nodelist, first", [("node[07-09,12],gpu3", "node07"), ("a,b", "a"), ("host[5]", "host5"),
                                             ("h1 h2", "h1"), ("gpu-a100-3", "gpu-a100-3")])
def test_the_rendezvous_host_is_the_first_of_slurms_node_list(nodelist, first):
    assert dist.first_slurm_host(nodelist) == first


def test_an_srun_task_gets_torch_distributeds_variables_from_slurms():
    # GIVEN the variables srun gives task 1 of 2 of job 4711
    env = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4711",
           "SLURM_STEP_NODELIST": "n[3-4]", "SLURM_JOB_NODELIST": "n[1-4]"}
    # THEN rank, size and local rank are SLURM's, the rendezvous is on the step's first node, at a port from the job id
    assert dist.slurm_rendezvous(env) == {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "n3",
                                          "MASTER_PORT": "19711"}
    # AND what the user set wins
    assert dist.slurm_rendezvous({**env, "MASTER_PORT": "29500"})["MASTER_PORT"] == "29500"
