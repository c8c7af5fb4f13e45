"""The training launcher: where `python -m pipeline.train` runs, chosen per deployment.

    local        N processes on this host: torchrun through Dagster's PipesSubprocessClient
    hostfile     DeepSpeed's launcher over a hostfile (pdsh/SSH to every node)
    slurm        an sbatch script (srun + torchrun, c10d rendezvous on the first node), `sbatch --wait`
    kubernetes   one node: a Pipes pod (dagster-k8s PipesK8sClient); several: a Kubeflow PyTorchJob

Rank 0 reports through Dagster Pipes in every case (resources/pipes_reporter.py): over temporary
files on one host, over files in `shared_dir` (a folder every node sees at the same path) for
hostfile and Slurm, over the pod's log for Kubernetes. The commands, scripts and manifests are
built by pipeline/train/launch.py; this module adds the Pipes session and starts them.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from pipeline.train import launch as builders
from resources.pipes_reporter import REPORTER_SPEC

KINDS = ("local", "hostfile", "slurm", "kubernetes")
DEFAULT_MODEL = "meta-llama/Llama-3.2-11B-Vision-Instruct"
REPO_ROOT = Path(__file__).resolve().parents[1]
REPORTER_ENV = "LLAVACOT_TRAIN_REPORTER"


class TrainingSettings(dg.ConfigurableResource):
    """The deployment's training defaults (the paper's: lr 1e-5, 3 epochs, batch 4 per device, ZeRO-3);
    the asset's run config overrides any of them (`TUNABLE`). In production every field can also be
    set from the environment: LLAVACOT_TRAIN_<FIELD> (see `training_settings_from_env`)."""

    model: str = Field(default=DEFAULT_MODEL, description="Local folder or hub id of the model to fine-tune.")
    tiny_model: bool = Field(default=False, description="Use the embedded tiny Mllama, written under "
                             "<data root>/tiny_model on first use (demo), instead of `model`.")
    tiny_model_size: str = Field(default="test", description="The embedded model's size: test (the smallest) or "
                                 "demo (learns four-stage answers from the embedded sample).")
    epochs: int = 3
    max_steps: int = Field(default=0, description="Stop after this many optimizer steps; 0: the epochs decide.")
    lr: float = 1e-5
    warmup_steps: Optional[int] = Field(default=None, description="Linear warm-up steps; unset: 3 % of the run.")
    zero_stage: int = Field(default=3, description="DeepSpeed ZeRO stage: 3 or 2 (the configs shipped in pipeline/train/configs).")
    per_device_batch_size: int = 4
    grad_accum: int = 1
    max_length: int = Field(default=4096, description="Tokens per sequence (longer rows are truncated).")
    gradient_checkpointing: Optional[bool] = Field(
        default=None, description="Activation checkpointing of the text and vision layers; unset: on for models of "
                                  "1 B parameters or more (the 11B needs it to fit 80 GB), off for the tiny one.")
    freeze_vision: bool = Field(default=False, description="Do not train the vision tower.")
    freeze_projector: bool = Field(default=False, description="Do not train the vision-to-text projector.")
    save_every: int = Field(default=500, description="Checkpoint every this many optimizer steps (and at the end).")
    keep_checkpoints: int = Field(default=3, description="Keep the newest N checkpoints (0: all). An 11B "
                                  "checkpoint with its optimizer states is >= 128 GB.")
    seed: int = 42
    num_workers: int = Field(default=2, description="Data-loader worker processes per rank.")
    group_by_length: int = Field(default=64, description="Sort rows by length within windows of this many "
                                 "micro-batches (less padding); 0: off.")
    fused_loss: str = Field(default="auto", description="auto | liger | chunked | off: the head and cross-entropy "
                            "without full logits.")
    fused_kernels: str = Field(default="auto", description="auto | off: Liger's fused norms and SwiGLU on a GPU.")
    compile: bool = Field(default=False, description="torch.compile the MLPs.")
    extra_args: list[str] = Field(default_factory=list, description="More entry-point flags (python -m pipeline.train --help).")
    output_dir: str = Field(default="", description="Where checkpoints and the export go (a folder every node "
                            "sees); default: <data root>/finetuned_model when the data root is local.")

    def output_path(self, data_root) -> str:
        if self.output_dir:
            return self.output_dir
        if not data_root.is_local:
            raise ValueError("the data root is not a local folder: set the training resource's output_dir "
                             "(LLAVACOT_TRAIN_OUTPUT) to shared storage the training nodes write to")
        return data_root.path("finetuned_model")

    def model_path(self, data_root) -> str:
        if not self.tiny_model:
            return self.model
        from pipeline.demo.tiny_model import write_tiny_model

        if not data_root.is_local:
            raise ValueError("the embedded tiny model is written to a local data root only")
        return write_tiny_model(data_root.path("tiny_model"), size=self.tiny_model_size)

    def options(self, overrides: dict, *, model: str, data: str, output_dir: str) -> dict:
        """The entry point's options (`python -m pipeline.train --help`), run config over these defaults."""
        v = {k: getattr(self, k) for k in TUNABLE}
        v.update({k: val for k, val in overrides.items() if val is not None and k in v})
        if v["zero_stage"] not in (2, 3):
            raise ValueError(f"zero_stage must be 2 or 3, not {v['zero_stage']}")
        if v["fused_loss"] not in ("auto", "liger", "chunked", "off") or v["fused_kernels"] not in ("auto", "off"):
            raise ValueError(f"fused_loss must be auto|liger|chunked|off and fused_kernels auto|off, "
                             f"not {v['fused_loss']!r} / {v['fused_kernels']!r}")
        checkpointing = v.pop("gradient_checkpointing")
        return {"model": model, "data": data, "output_dir": output_dir, **v,
                # unset: the entry point decides by model size; False must be said (--no-...)
                "gradient_checkpointing": checkpointing is True, "no_gradient_checkpointing": checkpointing is False,
                "resume": bool(overrides.get("resume"))}


# what a run's config may override (assets/training.py TrainingConfig has a field for each), in flag order
TUNABLE = ("zero_stage", "epochs", "max_steps", "lr", "warmup_steps", "per_device_batch_size", "grad_accum",
           "max_length", "gradient_checkpointing", "freeze_vision", "freeze_projector", "save_every",
           "keep_checkpoints", "seed", "num_workers", "group_by_length", "fused_loss", "fused_kernels", "compile")
ENV_PREFIX = "LLAVACOT_TRAIN_"


def training_settings_from_env(**defaults) -> TrainingSettings:
    """TrainingSettings from `defaults` and the environment: LLAVACOT_TRAIN_<FIELD> for every field
    (LLAVACOT_TRAIN_GRADIENT_CHECKPOINTING=true, LLAVACOT_TRAIN_KEEP_CHECKPOINTS=2,
    LLAVACOT_TRAIN_EXTRA_ARGS="--log-every 10", ...); LLAVACOT_MODEL and LLAVACOT_TRAIN_OUTPUT as before."""
    env = os.environ
    values = dict(defaults)
    if env.get("LLAVACOT_MODEL"):
        values["model"] = env["LLAVACOT_MODEL"]
    if env.get("LLAVACOT_TRAIN_OUTPUT"):
        values["output_dir"] = env["LLAVACOT_TRAIN_OUTPUT"]
    for name, field in TrainingSettings.model_fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        kind = field.annotation
        if name == "extra_args":
            values[name] = shlex.split(raw)
        elif kind in (bool, Optional[bool]):
            if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: expected true or false")
            values[name] = raw.lower() in ("1", "true", "yes", "on")
        elif kind in (int, Optional[int]):
            values[name] = int(raw)
        elif kind is float:
            values[name] = float(raw)
        else:
            values[name] = raw
    return TrainingSettings(**values)


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


class TrainingLauncher(dg.ConfigurableResource):
    kind: str = Field(default="local", description="local | hostfile | slurm | kubernetes")
    nproc_per_node: int = Field(
        default=0, description="Ranks per node (one per GPU). 0: every GPU visible here, or 1 on a CPU-only host.")
    nnodes: int = Field(default=1, description="Nodes (hostfile: the first N hosts of the hostfile; slurm: --nodes; "
                                               "kubernetes: 1 = a pod, more = a PyTorchJob).")
    master_port: int = Field(default=builders.DEFAULT_PORT, description="Rendezvous / master port.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment of every rank (NCCL_*, HF_HOME, ...).")
    torchrun: str = Field(default="", description="torchrun executable; default: the one next to this Python, "
                                                  "else `torchrun` on the PATH (slurm/kubernetes: `torchrun`).")
    shared_dir: str = Field(default="", description="hostfile/slurm: a folder every node sees at the same path, for the "
                                                    "Pipes context and messages; default: the run folder.")
    workdir: str = Field(default="", description="hostfile/slurm: the folder the ranks start in (the launchers `cd` "
                                                 "there on every node); default: this checkout.")
    # hostfile
    hostfile: str = Field(default="", description="hostfile: DeepSpeed hostfile (`<host> slots=<n>` lines).")
    master_addr: str = Field(default="", description="hostfile: address of rank 0's host; default: its first host.")
    ssh_launcher: str = Field(default="pdsh", description="hostfile: DeepSpeed's multi-node backend (pdsh, openmpi, ...).")
    deepspeed: str = Field(default="deepspeed", description="hostfile: the DeepSpeed launcher executable.")
    # slurm
    slurm_partition: str = ""
    slurm_account: str = ""
    slurm_time: str = Field(default="", description="slurm: --time, e.g. 24:00:00.")
    slurm_cpus_per_task: int = 0
    slurm_mem: str = ""
    slurm_extra: list[str] = Field(default_factory=list, description="slurm: more #SBATCH options, e.g. --qos=high.")
    setup: list[str] = Field(default_factory=list, description="slurm: shell lines run first (module load, venv activate).")
    # kubernetes
    image: str = Field(default="", description="kubernetes: container image with this package installed.")
    namespace: str = "default"
    volume_claim: str = Field(default="", description="kubernetes: PVC holding the data root, mounted at mount_path.")
    mount_path: str = Field(default="", description="kubernetes: where the PVC is mounted (the data root's path).")
    service_account: str = ""
    cpu: str = ""
    memory: str = ""
    node_selector: dict[str, str] = Field(default_factory=dict)
    kubeconfig_file: str = ""

    # ------------------------------------------------------------------ plain builders (tested)

    def ranks_per_node(self) -> int:
        if self.nproc_per_node > 0:
            return self.nproc_per_node
        if self.kind != "local":
            raise ValueError(f"launcher kind {self.kind!r} needs nproc_per_node (GPUs per node)")
        if _cuda_available():
            import torch

            return torch.cuda.device_count()
        return 1

    def world_size(self) -> int:
        return self.ranks_per_node() * (1 if self.kind == "local" else self.nnodes)

    def _torchrun(self) -> str:
        if self.torchrun:
            return self.torchrun
        if self.kind == "local":
            here = Path(sys.executable).with_name("torchrun")
            return str(here) if here.exists() else "torchrun"
        return "torchrun"

    def hosts(self) -> list[tuple[str, int]]:
        return builders.parse_hostfile(Path(self.hostfile).read_text())

    def local_command(self, train_args: list[str]) -> list[str]:
        return builders.torchrun_command(train_args, nproc_per_node=self.ranks_per_node(), torchrun=self._torchrun())

    def hostfile_command(self, train_args: list[str]) -> list[str]:
        if not self.hostfile:
            raise ValueError("launcher kind 'hostfile' needs `hostfile`")
        hosts = self.hosts()
        if self.nnodes > len(hosts):
            raise ValueError(f"nnodes={self.nnodes} but the hostfile lists {len(hosts)} host(s)")
        return builders.deepspeed_hostfile_command(
            train_args, hostfile=self.hostfile, num_nodes=self.nnodes, num_gpus=self.ranks_per_node(),
            master_addr=self.master_addr or hosts[0][0], master_port=self.master_port, launcher=self.ssh_launcher,
            deepspeed=self.deepspeed)

    def sbatch_script(self, train_args: list[str], run_dir: str, env: dict[str, str]) -> str:
        return builders.sbatch_script(
            train_args, nodes=self.nnodes, gpus_per_node=self.ranks_per_node(), cpus_per_task=self.slurm_cpus_per_task or None,
            mem=self.slurm_mem or None, time_limit=self.slurm_time or None, partition=self.slurm_partition or None,
            account=self.slurm_account or None, output=f"{run_dir}/slurm-%j.out", rdzv_port=self.master_port,
            setup=self.setup, env={**self.env, **env}, extra_sbatch=self.slurm_extra, torchrun=self._torchrun(),
            workdir=self.workdir or str(REPO_ROOT))

    def _k8s_common(self) -> dict:
        if not self.image:
            raise ValueError("launcher kind 'kubernetes' needs `image`")
        return dict(image=self.image, namespace=self.namespace, cpu=self.cpu or None, memory=self.memory or None,
                    volume_claim=self.volume_claim or None, mount_path=self.mount_path or None,
                    service_account=self.service_account or None, node_selector=self.node_selector or None)

    def pod_manifest(self, train_args: list[str], name: str, env: dict[str, str]) -> dict:
        command = builders.torchrun_command(train_args, nproc_per_node=self.ranks_per_node(), torchrun=self._torchrun())
        return builders.pod_manifest(name=name, command=command, env={**self.env, **env},
                                     gpus=self.ranks_per_node(), **self._k8s_common())

    def pytorchjob_manifest(self, train_args: list[str], name: str, master_env: dict[str, str]) -> dict:
        return builders.pytorchjob_manifest(train_args, name=name, nnodes=self.nnodes, gpus_per_node=self.ranks_per_node(),
                                            env=self.env, master_env=master_env, torchrun=self._torchrun(),
                                            **self._k8s_common())

    def describe(self) -> dict:
        """What a user wants to see of the launch in the asset's metadata."""
        out = {"kind": self.kind, "nodes": 1 if self.kind == "local" else self.nnodes,
               "ranks_per_node": self.ranks_per_node(), "world_size": self.world_size()}
        if self.kind == "local":
            out["accelerator"] = "cuda" if _cuda_available() else "cpu"
        if self.kind == "kubernetes":
            out["workload"] = "pod" if self.nnodes == 1 else "PyTorchJob (kubeflow.org/v1)"
        return out

    # ------------------------------------------------------------------ launching

    def launch(self, context: dg.AssetExecutionContext, train_args: list[str], run_dir: str,
               extras: dict | None = None) -> tuple[dg.PipesClientCompletedInvocation, str]:
        """Run the training; return the Pipes results and the launched command (or submitted file)."""
        if self.kind not in KINDS:
            raise ValueError(f"launcher kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        return getattr(self, f"_launch_{self.kind}")(context, list(train_args), run_dir, extras or {})

    def _rank_env(self) -> dict[str, str]:
        """What every rank needs besides the Pipes variables: the reporter to load on rank 0, `env`."""
        return {REPORTER_ENV: REPORTER_SPEC, **self.env}

    def _launch_local(self, context, train_args, run_dir, extras):
        cmd = self.local_command(train_args)
        env = self._rank_env()
        if not _cuda_available():
            env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed on the CPU accelerator (gloo)
        # the workers import pipeline/ and resources/ (the reporter) from this checkout
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        context.log.info(f"launching: {shlex.join(cmd)}")
        client = dg.PipesSubprocessClient(cwd=run_dir, env=env)
        invocation = client.run(context=context, command=cmd, extras=extras)
        return invocation, shlex.join(cmd)

    def _shared_pipes(self, run_dir: str) -> tuple[dg.PipesFileContextInjector, dg.PipesFileMessageReader]:
        folder = Path(self.shared_dir or run_dir) / "pipes"
        folder.mkdir(parents=True, exist_ok=True)
        return (dg.PipesFileContextInjector(str(folder / "context.json")),
                dg.PipesFileMessageReader(str(folder / "messages.jsonl"), cleanup_file=False))

    def _launch_hostfile(self, context, train_args, run_dir, extras):
        cmd = self.hostfile_command(train_args)
        injector, reader = self._shared_pipes(run_dir)
        with dg.open_pipes_session(context=context, context_injector=injector, message_reader=reader,
                                   extras=extras) as session:
            # DeepSpeed exports the variables of the file named by DS_ENV_FILE to every rank on every node
            env_file = Path(run_dir) / "deepspeed_env"
            env_file.write_text(builders.deepspeed_env_file({**session.get_bootstrap_env_vars(), **self._rank_env()}))
            context.log.info(f"launching: {shlex.join(cmd)}")
            # the runner starts every rank in its own working directory (`cd <cwd>` over SSH)
            _run_process(context, cmd, {"DS_ENV_FILE": str(env_file)}, cwd=self.workdir or str(REPO_ROOT))
        return dg.PipesClientCompletedInvocation(session), shlex.join(cmd)

    def _launch_slurm(self, context, train_args, run_dir, extras):
        injector, reader = self._shared_pipes(run_dir)
        script_path = Path(run_dir) / "train.sbatch"
        with dg.open_pipes_session(context=context, context_injector=injector, message_reader=reader,
                                   extras=extras) as session:
            script = self.sbatch_script(train_args, run_dir, {**session.get_bootstrap_env_vars(), **self._rank_env()})
            script_path.write_text(script)
            cmd = ["sbatch", "--wait", "--parsable", str(script_path)]
            context.log.info(f"submitting {script_path} ({self.nnodes} nodes x {self.ranks_per_node()} GPUs)")
            _run_process(context, cmd, {}, cwd=run_dir, on_cancel=_scancel)
        return dg.PipesClientCompletedInvocation(session), str(script_path)

    def _launch_kubernetes(self, context, train_args, run_dir, extras):
        name = builders.k8s_name(f"llavacot-train-{context.run_id[:8]}")
        if self.nnodes == 1:
            from dagster_k8s import PipesK8sClient

            manifest = self.pod_manifest(train_args, name, self._rank_env())
            (Path(run_dir) / "pod.json").write_text(json.dumps(manifest, indent=1))
            client = PipesK8sClient(kubeconfig_file=self.kubeconfig_file or None)
            invocation = client.run(context=context, extras=extras, namespace=self.namespace,
                                    base_pod_meta=manifest["metadata"], base_pod_spec=manifest["spec"])
            return invocation, f"pod in namespace {self.namespace} ({Path(run_dir) / 'pod.json'})"
        return self._launch_pytorchjob(context, train_args, run_dir, extras, name)

    def _launch_pytorchjob(self, context, train_args, run_dir, extras, name):
        import kubernetes
        from dagster_k8s.client import DagsterKubernetesClient, WaitForPodState
        from dagster_k8s.pipes import PipesK8sPodLogsMessageReader

        if self.kubeconfig_file:
            kubernetes.config.load_kube_config(config_file=self.kubeconfig_file)
        else:
            try:
                kubernetes.config.load_incluster_config()
            except kubernetes.config.ConfigException:
                kubernetes.config.load_kube_config()
        client = DagsterKubernetesClient.production_client()
        jobs = kubernetes.client.CustomObjectsApi()
        reader = PipesK8sPodLogsMessageReader()
        path = Path(run_dir) / "pytorchjob.json"
        group, version, plural = "kubeflow.org", "v1", "pytorchjobs"
        with dg.open_pipes_session(context=context, context_injector=dg.PipesEnvContextInjector(),
                                   message_reader=reader, extras=extras) as session:
            manifest = self.pytorchjob_manifest(train_args, name, {**session.get_bootstrap_env_vars(), **self._rank_env()})
            path.write_text(json.dumps(manifest, indent=1))
            jobs.create_namespaced_custom_object(group, version, self.namespace, plural, manifest)
            master = f"{name}-master-0"
            try:
                _wait_for_pod_to_exist(client.core_api, master, self.namespace)
                client.wait_for_pod(master, self.namespace, wait_for_state=WaitForPodState.Ready)
                reader.consume_pod_logs(context=context, core_api=client.core_api, namespace=self.namespace,
                                        pod_name=master)  # until rank 0's container exits
                state = _wait_for_job(jobs, group, version, self.namespace, plural, name)
                if state != "Succeeded":
                    raise dg.Failure(description=f"PyTorchJob {name} ended {state}; "
                                     f"see kubectl -n {self.namespace} describe pytorchjob {name}")
            except BaseException:
                jobs.delete_namespaced_custom_object(group, version, self.namespace, plural, name)
                raise
        return dg.PipesClientCompletedInvocation(session), f"PyTorchJob {self.namespace}/{name} ({path})"


def _run_process(context, cmd: list[str], env: dict[str, str], cwd: str, on_cancel=None) -> None:
    """Run a launcher process to its end; a cancelled run stops it (and, for Slurm, the job)."""
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    first_line = None
    try:
        for line in proc.stdout:
            first_line = first_line or line.strip()
            sys.stdout.write(line)
        proc.wait()
    except BaseException:
        if on_cancel and first_line:
            on_cancel(first_line)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        raise
    if proc.returncode != 0:
        raise dg.Failure(description=f"{cmd[0]} exited with code {proc.returncode}; its output is in the run's stdout")


def _scancel(parsable_line: str) -> None:
    job_id = parsable_line.split(";")[0]
    if job_id.isdigit():
        subprocess.run(["scancel", job_id], check=False)


def _wait_for_pod_to_exist(core_api, name: str, namespace: str, timeout_s: float = 3600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pods = core_api.list_namespaced_pod(namespace, field_selector=f"metadata.name={name}").items
        if pods:
            return
        time.sleep(5)
    raise dg.Failure(description=f"pod {name} was not created within {timeout_s:.0f}s (is the training operator installed?)")


def _wait_for_job(jobs, group, version, namespace, plural, name, poll_s: float = 10) -> str:
    while True:
        job = jobs.get_namespaced_custom_object_status(group, version, namespace, plural, name)
        for cond in (job.get("status") or {}).get("conditions") or []:
            if cond.get("status") == "True" and cond.get("type") in ("Succeeded", "Failed"):
                return cond["type"]
        time.sleep(poll_s)


def launcher_from_env(**overrides) -> TrainingLauncher:
    """The launcher as the environment configures it (production):

    LLAVACOT_LAUNCHER (local | hostfile | slurm | kubernetes), LLAVACOT_NPROC_PER_NODE, LLAVACOT_NNODES,
    LLAVACOT_MASTER_PORT, LLAVACOT_HOSTFILE, LLAVACOT_MASTER_ADDR, LLAVACOT_SHARED_DIR,
    LLAVACOT_SLURM_PARTITION, LLAVACOT_SLURM_ACCOUNT, LLAVACOT_SLURM_TIME, LLAVACOT_SLURM_SETUP (lines
    separated by ';'), LLAVACOT_K8S_IMAGE, LLAVACOT_K8S_NAMESPACE, LLAVACOT_K8S_PVC, LLAVACOT_K8S_MOUNT_PATH.
    """
    e = os.environ
    kwargs: dict = {"kind": e.get("LLAVACOT_LAUNCHER", "local")}
    ints = {"nproc_per_node": "LLAVACOT_NPROC_PER_NODE", "nnodes": "LLAVACOT_NNODES", "master_port": "LLAVACOT_MASTER_PORT"}
    strs = {"hostfile": "LLAVACOT_HOSTFILE", "master_addr": "LLAVACOT_MASTER_ADDR", "shared_dir": "LLAVACOT_SHARED_DIR",
            "slurm_partition": "LLAVACOT_SLURM_PARTITION", "slurm_account": "LLAVACOT_SLURM_ACCOUNT",
            "slurm_time": "LLAVACOT_SLURM_TIME", "image": "LLAVACOT_K8S_IMAGE", "namespace": "LLAVACOT_K8S_NAMESPACE",
            "volume_claim": "LLAVACOT_K8S_PVC", "mount_path": "LLAVACOT_K8S_MOUNT_PATH"}
    kwargs.update({k: int(e[v]) for k, v in ints.items() if e.get(v)})
    kwargs.update({k: e[v] for k, v in strs.items() if e.get(v)})
    if e.get("LLAVACOT_SLURM_SETUP"):
        kwargs["setup"] = [s.strip() for s in e["LLAVACOT_SLURM_SETUP"].split(";") if s.strip()]
    kwargs.update(overrides)
    return TrainingLauncher(**kwargs)
