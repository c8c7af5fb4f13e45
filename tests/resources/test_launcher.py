"""The training launchers, checked by what they produce: exact commands (parsed by torchrun's and
DeepSpeed's own argument parsers), the Slurm script (`bash -n`, then run against stand-ins for
scontrol/srun), the Kubernetes pod and PyTorchJob (round-tripped through the Kubernetes and Kubeflow
models: a misspelt or unknown field would not survive)."""
import json
import os
import re
import shutil
import stat
import subprocess
import sys

import pytest

from pipeline.train import launch as builders
from resources.launcher import REPORTER_ENV, TrainingLauncher, TrainingSettings, launcher_from_env
from resources.pipes_reporter import REPORTER_SPEC

ARGS = ["--model", "/models/Llama-3.2-11B-Vision-Instruct", "--data", "/shared/data/cot_dataset",
        "--output-dir", "/shared/data/finetuned_model", "--zero-stage", "3", "--epochs", "3", "--lr", "1e-05"]


def torchrun_args(cmd):
    from torch.distributed.run import get_args_parser

    return get_args_parser().parse_args(cmd[1:])


# ----------------------------------------------------------------------------- builders

def test_train_arguments_maps_options_to_flags():
    assert builders.train_arguments({"model": "m", "per_device_batch_size": 4, "max_steps": None, "resume": True,
                                     "bf16": False, "lr": 1e-5}) == [
        "--model", "m", "--per-device-batch-size", "4", "--resume", "--lr", "1e-05"]


def test_the_asset_options_are_flags_the_entry_point_accepts():
    from pipeline.train.train import build_parser

    settings = TrainingSettings(save_every=100, extra_args=["--log-every", "5"])
    options = settings.options({"lr": 2e-5, "zero_stage": 2, "max_steps": None, "resume": True},
                               model="/models/m", data="s3://bucket/cot_dataset", output_dir="/shared/out")
    parsed = build_parser().parse_args(builders.train_arguments(options) + settings.extra_args)
    assert (parsed.model, parsed.data, parsed.output_dir) == ("/models/m", "s3://bucket/cot_dataset", "/shared/out")
    assert (parsed.lr, parsed.zero_stage, parsed.epochs, parsed.max_steps, parsed.per_device_batch_size) == (2e-5, 2, 3, 0, 4)
    assert parsed.save_every == 100 and parsed.resume == "auto" and parsed.log_every == 5
    assert parsed.keep_checkpoints == 3  # a few, not all: an 11B checkpoint is >= 128 GB
    assert parsed.gradient_checkpointing is None  # unset: the entry point decides by model size
    with pytest.raises(ValueError, match="zero_stage"):
        settings.options({"zero_stage": 1}, model="m", data="d", output_dir="o")


RUN_CONFIG = {"gradient_checkpointing": False, "save_every": 50, "keep_checkpoints": 1, "freeze_vision": True,
              "freeze_projector": True, "max_length": 1024, "num_workers": 6, "group_by_length": 16,
              "fused_loss": "chunked", "fused_kernels": "off", "compile": True, "warmup_steps": 7}


def test_every_training_option_of_the_run_config_reaches_the_entry_points_parser():
    from assets.training import TrainingConfig
    from pipeline.train.train import build_parser
    from resources.launcher import TUNABLE

    assert set(TUNABLE) <= set(TrainingConfig.model_fields)  # settable per run in the UI
    options = TrainingSettings().options(TrainingConfig(**RUN_CONFIG).model_dump(), model="m", data="d", output_dir="o")
    parsed = vars(build_parser().parse_args(builders.train_arguments(options)))
    assert {k: parsed[k] for k in RUN_CONFIG} == RUN_CONFIG
    on = TrainingSettings().options({"gradient_checkpointing": True}, model="m", data="d", output_dir="o")
    assert build_parser().parse_args(builders.train_arguments(on)).gradient_checkpointing is True


def test_training_settings_from_the_environment(monkeypatch):
    from pipeline.train.train import build_parser
    from resources.launcher import training_settings_from_env

    for name, value in {"MODEL": "/models/llama", "TRAIN_GRADIENT_CHECKPOINTING": "true", "TRAIN_KEEP_CHECKPOINTS": "2",
                        "TRAIN_SAVE_EVERY": "250", "TRAIN_FREEZE_VISION": "yes", "TRAIN_LR": "2e-5",
                        "TRAIN_EXTRA_ARGS": "--log-every 10"}.items():
        monkeypatch.setenv(f"LLAVACOT_{name}", value)
    settings = training_settings_from_env()
    assert settings.model == "/models/llama" and settings.extra_args == ["--log-every", "10"]
    options = settings.options({}, model=settings.model, data="d", output_dir="o")
    parsed = build_parser().parse_args(builders.train_arguments(options) + settings.extra_args)
    assert (parsed.gradient_checkpointing, parsed.keep_checkpoints, parsed.save_every, parsed.freeze_vision,
            parsed.lr, parsed.log_every) == (True, 2, 250, True, 2e-5, 10)
    monkeypatch.setenv("LLAVACOT_TRAIN_COMPILE", "maybe")
    with pytest.raises(ValueError, match="LLAVACOT_TRAIN_COMPILE"):
        training_settings_from_env()


def test_local_command_is_torchrun_standalone():
    launcher = TrainingLauncher(kind="local", nproc_per_node=2, torchrun="torchrun")
    cmd = launcher.local_command(ARGS)
    assert cmd == ["torchrun", "--standalone", "--nnodes", "1", "--nproc_per_node", "2", "-m", "pipeline.train", *ARGS]
    parsed = torchrun_args(cmd)
    assert parsed.standalone and parsed.nproc_per_node == "2" and parsed.module
    assert parsed.training_script == "pipeline.train" and parsed.training_script_args == ARGS


def test_local_launcher_defaults_to_the_torchrun_beside_this_python():
    cmd = TrainingLauncher(kind="local", nproc_per_node=2).local_command([])
    assert os.path.dirname(cmd[0]) == os.path.dirname(sys.executable) or cmd[0] == "torchrun"


def test_hostfile_command_exact_and_accepted_by_deepspeed(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes of eight GPUs\nworker-1 slots=8\nworker-2 slots=8\nworker-3 slots=8\n")
    launcher = TrainingLauncher(kind="hostfile", hostfile=str(hostfile), nnodes=2, nproc_per_node=8)
    cmd = launcher.hostfile_command(ARGS)
    assert cmd == ["deepspeed", "--hostfile", str(hostfile), "--num_nodes", "2", "--num_gpus", "8",
                   "--master_addr", "worker-1", "--master_port", "29500", "--launcher", "pdsh",
                   "--module", "pipeline.train", *ARGS]
    from deepspeed.launcher.runner import fetch_hostfile, parse_args

    parsed = parse_args(cmd[1:])
    assert (parsed.num_nodes, parsed.num_gpus, parsed.master_addr, parsed.module) == (2, 8, "worker-1", True)
    assert parsed.user_script == "pipeline.train" and parsed.user_args == ARGS
    assert dict(fetch_hostfile(str(hostfile))) == dict(builders.parse_hostfile(hostfile.read_text()))


def test_hostfile_problems_are_explained(tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("worker-1 slots=eight\n")
    with pytest.raises(ValueError, match="line 1"):
        TrainingLauncher(kind="hostfile", hostfile=str(bad), nproc_per_node=8).hostfile_command(ARGS)
    short = tmp_path / "short"
    short.write_text("worker-1 slots=8\n")
    with pytest.raises(ValueError, match="lists 1 host"):
        TrainingLauncher(kind="hostfile", hostfile=str(short), nnodes=2, nproc_per_node=8).hostfile_command(ARGS)
    with pytest.raises(ValueError, match="nproc_per_node"):
        TrainingLauncher(kind="hostfile", hostfile=str(short)).hostfile_command(ARGS)


def test_deepspeed_env_file_is_read_back_by_deepspeed(tmp_path, monkeypatch):
    """The reporter's variables reach every rank through the file DS_ENV_FILE names."""
    env = {"DAGSTER_PIPES_CONTEXT": "eJyrVipILMlQslJQSs7PS8tMLVGqBQA8kAZ/", REPORTER_ENV: REPORTER_SPEC}
    text = builders.deepspeed_env_file(env)
    assert text == f"DAGSTER_PIPES_CONTEXT={env['DAGSTER_PIPES_CONTEXT']}\n{REPORTER_ENV}={REPORTER_SPEC}\n"
    # read it as deepspeed's runner does (KEY=VALUE split once, stripped, exported verbatim)
    from deepspeed.launcher.multinode_runner import PDSHRunner
    from deepspeed.launcher.runner import parse_args

    runner = PDSHRunner(parse_args(["--module", "pipeline.train", *ARGS]), "")
    for line in text.splitlines(True):
        key, val = line.split("=", maxsplit=1)
        runner.add_export(key, val)
    assert runner.exports == env
    with pytest.raises(ValueError):
        builders.deepspeed_env_file({"A": "two\nlines"})


# ----------------------------------------------------------------------------- Slurm

def slurm_launcher(**kw):
    return TrainingLauncher(kind="slurm", nnodes=2, nproc_per_node=8, slurm_partition="gpu", slurm_account="vision",
                            slurm_time="24:00:00", slurm_cpus_per_task=96,
                            setup=["source /opt/llavacot/venv/bin/activate"], **kw)


def test_sbatch_script_exact(tmp_path):
    script = slurm_launcher().sbatch_script(ARGS, "/shared/runs/r1", {REPORTER_ENV: REPORTER_SPEC})
    head = script.splitlines()
    assert head[:9] == [
        "#!/bin/bash",
        "#SBATCH --job-name=llavacot-train",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --cpus-per-task=96",
        "#SBATCH --time=24:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=vision",
    ]
    assert "#SBATCH --output=/shared/runs/r1/slurm-%j.out" in head
    assert "set -euo pipefail" in head and "source /opt/llavacot/venv/bin/activate" in head
    assert f"export {REPORTER_ENV}={REPORTER_SPEC}" in head
    assert 'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)' in head
    assert ('srun --kill-on-bad-exit=1 --ntasks-per-node=1 torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 8 '
            '--rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$head_node:29500" -m pipeline.train \\') in head
    # every #SBATCH line comes before the first command, as sbatch requires
    first_command = next(i for i, line in enumerate(head) if line and not line.startswith("#"))
    assert all(i < first_command for i, line in enumerate(head) if line.startswith("#SBATCH"))


def test_sbatch_script_passes_bash_n(tmp_path):
    path = tmp_path / "train.sbatch"
    path.write_text(slurm_launcher().sbatch_script(ARGS + ["--note", "it's \"quoted\" $HOME"], str(tmp_path), {"X": "a b"}))
    subprocess.run(["bash", "-n", str(path)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-S", "warning", str(path)], check=True)


def test_sbatch_script_runs_torchrun_per_node_with_rendezvous_on_the_first(tmp_path):
    """Run the script with stand-ins for scontrol and srun: the torchrun it starts is exactly right."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # a long node list, as on a big allocation (the first name must be read without breaking the pipe)
    (bin_dir / "scontrol").write_text('#!/bin/bash\n[ "$1 $2" = "show hostnames" ] && for i in $(seq 17 5000); do '
                                      'printf "gpu-%03d\\n" $i; done\n')
    (bin_dir / "srun").write_text(
        f'#!/bin/bash\n{sys.executable} -c "import json,sys; print(json.dumps(sys.argv[1:]))" "$@" > "$SRUN_ARGS"\n')
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    odd = ["--note", "it's \"quoted\" $HOME"]
    script = tmp_path / "train.sbatch"
    script.write_text(TrainingLauncher(kind="slurm", nnodes=2, nproc_per_node=8)
                      .sbatch_script(ARGS + odd, str(tmp_path), {REPORTER_ENV: REPORTER_SPEC}))
    out = tmp_path / "srun.json"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-[017-018]",
           "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242", "SRUN_ARGS": str(out)}
    subprocess.run(["bash", str(script)], check=True, env=env, capture_output=True)
    argv = json.loads(out.read_text())
    assert argv[:3] == ["--kill-on-bad-exit=1", "--ntasks-per-node=1", "torchrun"]
    parsed = torchrun_args(argv[2:])
    assert (parsed.nnodes, parsed.nproc_per_node, parsed.rdzv_backend, parsed.rdzv_endpoint, parsed.rdzv_id) == (
        "2", "8", "c10d", "gpu-017:29500", "4242")
    assert parsed.module and parsed.training_script == "pipeline.train"
    assert parsed.training_script_args == ARGS + odd  # quoting survives the shell


# ----------------------------------------------------------------------------- Kubernetes

def k8s_launcher(**kw):
    return TrainingLauncher(kind="kubernetes", nproc_per_node=8, image="registry.example/llavacot:0.1",
                            namespace="ml", volume_claim="llavacot-data", mount_path="/shared/data",
                            service_account="trainer", memory="900Gi", node_selector={"gpu": "h100"}, **kw)


def roundtrip(data: dict, klass: str, api_client) -> object:
    class Response:
        pass

    response = Response()
    response.data = json.dumps(data)
    obj = api_client.deserialize(response, klass)
    assert api_client.sanitize_for_serialization(obj) == data, "a field was not recognised by the model"
    return obj


def test_single_node_pod_validates_and_is_what_pipes_launches():
    from dagster_k8s.pipes import build_pod_body
    from kubernetes.client import ApiClient

    manifest = k8s_launcher().pod_manifest(ARGS, "llavacot-train-abc", {REPORTER_ENV: REPORTER_SPEC})
    pod = roundtrip(manifest, "V1Pod", ApiClient())
    container = pod.spec.containers[0]
    assert container.image == "registry.example/llavacot:0.1"
    assert container.resources.limits == {"nvidia.com/gpu": "8", "memory": "900Gi"}
    assert {m.mount_path for m in container.volume_mounts} == {"/dev/shm", "/shared/data"}
    assert pod.spec.restart_policy == "Never" and pod.spec.service_account_name == "trainer"
    parsed = torchrun_args(container.command)
    assert parsed.standalone and parsed.nproc_per_node == "8" and parsed.training_script_args == ARGS
    # the pod dagster-k8s's PipesK8sClient creates from it: same container, plus the Pipes variables
    body = build_pod_body(pod_name="dagster-run-x", image=None, command=None,
                          env_vars={"DAGSTER_PIPES_CONTEXT": "c", "DAGSTER_PIPES_MESSAGES": "m"},
                          base_pod_meta=manifest["metadata"], base_pod_spec=manifest["spec"])
    (c,) = body.spec.containers
    assert c.command == container.command and c.image == container.image
    assert {e.name: e.value for e in c.env} == {REPORTER_ENV: REPORTER_SPEC, "DAGSTER_PIPES_CONTEXT": "c",
                                                "DAGSTER_PIPES_MESSAGES": "m"}


def test_pytorchjob_manifest_validates_against_the_kubeflow_v1_models():
    from kubeflow.training.api_client import ApiClient

    launcher = k8s_launcher(nnodes=4)
    manifest = launcher.pytorchjob_manifest(ARGS, "llavacot-train-abc", {REPORTER_ENV: REPORTER_SPEC, "DAGSTER_PIPES_CONTEXT": "c"})
    job = roundtrip(manifest, "KubeflowOrgV1PyTorchJob", ApiClient())
    # what the kubeflow.org/v1 CRD requires, and what the training operator relies on
    assert (job.api_version, job.kind) == ("kubeflow.org/v1", "PyTorchJob")
    assert job.metadata.name == "llavacot-train-abc" and job.metadata.namespace == "ml"
    specs = job.spec.pytorch_replica_specs
    assert set(specs) == {"Master", "Worker"}
    assert specs["Master"].replicas == 1 and specs["Worker"].replicas == 3
    assert job.spec.nproc_per_node == "8"
    for role, spec in specs.items():
        assert spec.restart_policy in ("Always", "OnFailure", "Never", "ExitCode")
        (c,) = spec.template.spec.containers
        assert c.name == "pytorch" and c.image  # the operator finds its container by this name
        assert [(p.name, p.container_port) for p in c.ports] == [("pytorchjob-port", 23456)]
        assert c.resources.limits["nvidia.com/gpu"] == "8"
        env = {e.name for e in c.env}
        # Pipes and the reporter on rank 0's pod only
        assert ({REPORTER_ENV, "DAGSTER_PIPES_CONTEXT"} <= env) == (role == "Master")
        # the operator sets MASTER_ADDR, MASTER_PORT and RANK on every pod; Kubernetes expands $(VAR)
        operator_env = {"MASTER_ADDR": "llavacot-train-abc-master-0", "MASTER_PORT": "23456",
                        "RANK": "0" if role == "Master" else "2"}
        command = [re.sub(r"\$\((\w+)\)", lambda m: operator_env[m.group(1)], a) for a in c.command]
        parsed = torchrun_args(command)
        assert (parsed.nnodes, parsed.nproc_per_node) == ("4", "8")
        assert (parsed.node_rank, parsed.master_addr, parsed.master_port) == (
            int(operator_env["RANK"]), "llavacot-train-abc-master-0", 23456)
        assert parsed.training_script == "pipeline.train" and parsed.training_script_args == ARGS
    with pytest.raises(ValueError, match="several nodes"):
        k8s_launcher(nnodes=1).pytorchjob_manifest(ARGS, "x", {})


def test_kubernetes_needs_an_image():
    with pytest.raises(ValueError, match="image"):
        TrainingLauncher(kind="kubernetes", nproc_per_node=8).pod_manifest(ARGS, "x", {})


def test_k8s_names_are_dns_labels():
    assert builders.k8s_name("LLaVA_CoT train #1 " + "x" * 80) == ("llava-cot-train-1-" + "x" * 80)[:63]


# ----------------------------------------------------------------------------- configuration

def test_launcher_from_env(monkeypatch):
    monkeypatch.setenv("LLAVACOT_LAUNCHER", "slurm")
    monkeypatch.setenv("LLAVACOT_NNODES", "4")
    monkeypatch.setenv("LLAVACOT_NPROC_PER_NODE", "8")
    monkeypatch.setenv("LLAVACOT_SLURM_PARTITION", "h100")
    monkeypatch.setenv("LLAVACOT_SLURM_SETUP", "module load cuda/12.4; source venv/bin/activate")
    launcher = launcher_from_env()
    assert (launcher.kind, launcher.nnodes, launcher.nproc_per_node, launcher.slurm_partition) == ("slurm", 4, 8, "h100")
    assert launcher.setup == ["module load cuda/12.4", "source venv/bin/activate"]
    assert launcher.describe() == {"kind": "slurm", "nodes": 4, "ranks_per_node": 8, "world_size": 32}


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="local, hostfile, slurm, kubernetes"):
        TrainingLauncher(kind="ray").launch(None, [], str(tmp_path))
