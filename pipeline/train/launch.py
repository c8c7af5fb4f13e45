"""How `python -m pipeline.train` is started: pure builders of commands, scripts and manifests.

Nothing here launches anything. Each builder returns the exact thing a cluster runs (a command
list, an sbatch script, a Kubernetes manifest as a dict), so what cannot run on a laptop is still
tested by what it produces. The orchestration layer (resources/launcher.py) adds the reporter's
environment and starts them.

    one host, N processes   torchrun --standalone --nnodes 1 --nproc_per_node N -m pipeline.train ...
    several hosts (SSH)     deepspeed --hostfile H --num_nodes K --num_gpus G --master_addr A
                                      --master_port P --module pipeline.train ...
    Slurm                   sbatch script: srun starts one torchrun per node, c10d rendezvous on
                            the job's first node
    Kubernetes              one node: a pod running torchrun; several: a Kubeflow PyTorchJob
                            (kubeflow.org/v1), one torchrun per pod, ranks from the operator
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

TRAIN_MODULE = "pipeline.train"
DEFAULT_PORT = 29500
# the port the Kubeflow training operator expects on the container named "pytorch"
PYTORCHJOB_PORT_NAME = "pytorchjob-port"
PYTORCHJOB_PORT = 23456
PYTORCHJOB_CONTAINER = "pytorch"


def train_arguments(options: Mapping[str, object]) -> list[str]:
    """Entry-point flags from options, in order: key `per_device_batch_size` -> `--per-device-batch-size`.

    None and False are left out (the entry point's default applies); True is a bare flag."""
    argv: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, *[str(v) for v in value]]
        else:
            argv += [flag, str(value)]
    return argv


def torchrun_command(train_args: Sequence[str], *, nproc_per_node: int, nnodes: int = 1,
                     node_rank: str | int | None = None, master_addr: str | None = None,
                     master_port: str | int | None = None, rdzv_endpoint: str | None = None,
                     rdzv_id: str | None = None, torchrun: str = "torchrun") -> list[str]:
    """torchrun running the entry point as a module.

    One node and no rendezvous given: `--standalone` (a local c10d rendezvous on a free port, so
    two runs on one host never collide). With `rdzv_endpoint`: the c10d rendezvous (Slurm). With
    `master_addr`: the static rendezvous with an explicit node rank (Kubernetes)."""
    if nproc_per_node < 1 or nnodes < 1:
        raise ValueError(f"nproc_per_node and nnodes must be >= 1 (got {nproc_per_node}, {nnodes})")
    cmd = [torchrun]
    if rdzv_endpoint:
        cmd += ["--nnodes", str(nnodes), "--nproc_per_node", str(nproc_per_node),
                "--rdzv_id", str(rdzv_id or "llavacot"), "--rdzv_backend", "c10d", "--rdzv_endpoint", rdzv_endpoint]
    elif master_addr:
        cmd += ["--nnodes", str(nnodes), "--nproc_per_node", str(nproc_per_node), "--node_rank", str(node_rank or 0),
                "--master_addr", master_addr, "--master_port", str(master_port or DEFAULT_PORT)]
    elif nnodes == 1:
        cmd += ["--standalone", "--nnodes", "1", "--nproc_per_node", str(nproc_per_node)]
    else:
        raise ValueError("several nodes need a rendezvous endpoint or a master address")
    return cmd + ["-m", TRAIN_MODULE, *train_args]


# ----------------------------------------------------------------------------- DeepSpeed hostfile

def parse_hostfile(text: str) -> list[tuple[str, int]]:
    """(host, slots) per line of a DeepSpeed hostfile (`worker-1 slots=8`; `#` comments)."""
    hosts: list[tuple[str, int]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        slots = [p for p in parts[1:] if p.startswith("slots=")]
        if len(parts) != 2 or len(slots) != 1 or not slots[0][6:].isdigit():
            raise ValueError(f"hostfile line {number}: expected '<host> slots=<n>', got {raw!r}")
        if any(h == parts[0] for h, _ in hosts):
            raise ValueError(f"hostfile line {number}: host {parts[0]!r} listed twice")
        hosts.append((parts[0], int(slots[0][6:])))
    if not hosts:
        raise ValueError("the hostfile lists no hosts")
    return hosts


def deepspeed_hostfile_command(train_args: Sequence[str], *, hostfile: str, num_nodes: int, num_gpus: int,
                               master_addr: str, master_port: int = DEFAULT_PORT, launcher: str = "pdsh",
                               deepspeed: str = "deepspeed") -> list[str]:
    """The DeepSpeed launcher over a hostfile: it reaches the first `num_nodes` hosts (pdsh/SSH by
    default) and starts `num_gpus` ranks on each; rank 0 runs on `master_addr`.

    Variables the ranks need (the reporter's) travel in the file named by DS_ENV_FILE, which the
    launcher exports on every node (see `deepspeed_env_file`)."""
    if num_nodes < 1 or num_gpus < 1:
        raise ValueError(f"num_nodes and num_gpus must be >= 1 (got {num_nodes}, {num_gpus})")
    if not master_addr:
        raise ValueError("master_addr is required for a multi-node launch (the first host of the hostfile)")
    return [deepspeed, "--hostfile", hostfile, "--num_nodes", str(num_nodes), "--num_gpus", str(num_gpus),
            "--master_addr", master_addr, "--master_port", str(master_port), "--launcher", launcher,
            "--module", TRAIN_MODULE, *train_args]


def deepspeed_env_file(env: Mapping[str, str]) -> str:
    """Text of a `.deepspeed_env` file: one KEY=VALUE a line, exported to every rank by the launcher."""
    lines = []
    for key, value in env.items():
        if "\n" in str(value) or "=" in key:
            raise ValueError(f"{key}: a .deepspeed_env entry must be one KEY=VALUE line")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- Slurm

def sbatch_script(train_args: Sequence[str], *, nodes: int, gpus_per_node: int, job_name: str = "llavacot-train",
                  cpus_per_task: int | None = None, mem: str | None = None, time_limit: str | None = None,
                  partition: str | None = None, account: str | None = None, output: str | None = None,
                  rdzv_port: int = DEFAULT_PORT, setup: Sequence[str] = (), env: Mapping[str, str] | None = None,
                  extra_sbatch: Sequence[str] = (), torchrun: str = "torchrun", workdir: str | None = None) -> str:
    """An sbatch script: `nodes` nodes, one task per node; `srun` starts one torchrun per node, which
    starts `gpus_per_node` ranks; the c10d rendezvous runs on the job's first node.

    `setup` lines run first on the batch host (e.g. `source /opt/venv/bin/activate`); `env` is
    exported to every rank (srun passes the environment on)."""
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"nodes and gpus_per_node must be >= 1 (got {nodes}, {gpus_per_node})")
    q = shlex.quote
    directives = [f"--job-name={job_name}", f"--nodes={nodes}", "--ntasks-per-node=1",
                  f"--gpus-per-node={gpus_per_node}"]
    if cpus_per_task:
        directives.append(f"--cpus-per-task={cpus_per_task}")
    if mem:
        directives.append(f"--mem={mem}")
    if time_limit:
        directives.append(f"--time={time_limit}")
    if partition:
        directives.append(f"--partition={partition}")
    if account:
        directives.append(f"--account={account}")
    if output:
        directives.append(f"--output={output}")
    directives += list(extra_sbatch)
    for d in directives:
        if "\n" in d or not d.startswith("--"):
            raise ValueError(f"not an sbatch option: {d!r}")
    lines = ["#!/bin/bash"] + [f"#SBATCH {d}" for d in directives] + [
        "# Fine-tuning (python -m pipeline.train): srun starts one torchrun per node; torchrun starts",
        f"# {gpus_per_node} ranks per node and meets the others at a c10d rendezvous on the first node.",
        "set -euo pipefail",
    ]
    if workdir:
        lines.append(f"cd {q(workdir)}")
    lines += list(setup)
    for key, value in (env or {}).items():
        if not key.isidentifier():
            raise ValueError(f"not an environment variable name: {key!r}")
        lines.append(f"export {key}={q(str(value))}")
    lines += [
        # sed reads to the end: `head -n 1` would close the pipe early, and under pipefail the
        # SIGPIPE of a long node list would fail the job
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
        f'echo "rendezvous on $head_node:{rdzv_port}, $SLURM_NNODES nodes x {gpus_per_node} ranks"',
    ]
    torch_args = [q(torchrun), "--nnodes", '"$SLURM_NNODES"', "--nproc_per_node", str(gpus_per_node),
                  "--rdzv_id", '"$SLURM_JOB_ID"', "--rdzv_backend", "c10d",
                  "--rdzv_endpoint", f'"$head_node:{rdzv_port}"', "-m", TRAIN_MODULE]
    body = ["srun --kill-on-bad-exit=1 --ntasks-per-node=1 " + " ".join(torch_args)]
    body += [q(a) for a in train_args]
    lines.append(" \\\n    ".join(body))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- Kubernetes

def _env_list(env: Mapping[str, str] | None) -> list[dict]:
    return [{"name": k, "value": str(v)} for k, v in (env or {}).items()]


def k8s_container(*, name: str, image: str, command: Sequence[str], env: Mapping[str, str] | None = None,
                  gpus: int = 0, cpu: str | None = None, memory: str | None = None,
                  volume_claim: str | None = None, mount_path: str | None = None,
                  working_dir: str | None = None, image_pull_policy: str = "IfNotPresent",
                  ports: Sequence[dict] = ()) -> dict:
    """One training container: its resources (GPUs as `nvidia.com/gpu` limits), the shared data
    volume and /dev/shm (NCCL and data loaders need more than the 64 MB default)."""
    limits: dict[str, str] = {}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    if cpu:
        limits["cpu"] = cpu
    if memory:
        limits["memory"] = memory
    container: dict = {"name": name, "image": image, "imagePullPolicy": image_pull_policy,
                       "command": [str(c) for c in command], "env": _env_list(env)}
    if limits:
        container["resources"] = {"limits": limits, "requests": dict(limits)}
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if volume_claim:
        mounts.append({"name": "data", "mountPath": mount_path or "/data"})
    container["volumeMounts"] = mounts
    if working_dir:
        container["workingDir"] = working_dir
    if ports:
        container["ports"] = [dict(p) for p in ports]
    return container


def _volumes(volume_claim: str | None) -> list[dict]:
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    if volume_claim:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": volume_claim}})
    return volumes


def pod_manifest(*, name: str, namespace: str, image: str, command: Sequence[str],
                 env: Mapping[str, str] | None = None, gpus: int = 0, cpu: str | None = None,
                 memory: str | None = None, volume_claim: str | None = None, mount_path: str | None = None,
                 working_dir: str | None = None, service_account: str | None = None,
                 node_selector: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None) -> dict:
    """A v1 Pod training on one node (torchrun with one rank per GPU); never restarted."""
    spec: dict = {
        "restartPolicy": "Never",
        "containers": [k8s_container(name="train", image=image, command=command, env=env, gpus=gpus, cpu=cpu,
                                     memory=memory, volume_claim=volume_claim, mount_path=mount_path,
                                     working_dir=working_dir)],
        "volumes": _volumes(volume_claim),
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "llavacot-train", **(labels or {})}},
            "spec": spec}


def pytorchjob_command(train_args: Sequence[str], *, nnodes: int, nproc_per_node: int,
                       torchrun: str = "torchrun") -> list[str]:
    """torchrun in a PyTorchJob pod. The operator sets MASTER_ADDR, MASTER_PORT and RANK (the pod's
    index, master 0) on every pod; Kubernetes expands `$(VAR)` in a command from the container's
    environment, so each pod passes its own node rank."""
    return torchrun_command(train_args, nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank="$(RANK)",
                            master_addr="$(MASTER_ADDR)", master_port="$(MASTER_PORT)", torchrun=torchrun)


def pytorchjob_manifest(train_args: Sequence[str], *, name: str, namespace: str, image: str, nnodes: int,
                        gpus_per_node: int, env: Mapping[str, str] | None = None,
                        master_env: Mapping[str, str] | None = None, cpu: str | None = None,
                        memory: str | None = None, volume_claim: str | None = None, mount_path: str | None = None,
                        working_dir: str | None = None, service_account: str | None = None,
                        node_selector: Mapping[str, str] | None = None, backoff_limit: int = 0,
                        torchrun: str = "torchrun") -> dict:
    """A Kubeflow PyTorchJob (kubeflow.org/v1): one Master pod (rank 0; `master_env` only there,
    e.g. the reporter's) and `nnodes - 1` Worker pods, each running `gpus_per_node` ranks."""
    if nnodes < 2:
        raise ValueError("a PyTorchJob is for several nodes; one node runs as a single pod")
    command = pytorchjob_command(train_args, nnodes=nnodes, nproc_per_node=gpus_per_node, torchrun=torchrun)
    ports = [{"name": PYTORCHJOB_PORT_NAME, "containerPort": PYTORCHJOB_PORT}]

    def replica(replicas: int, extra_env: Mapping[str, str] | None) -> dict:
        container = k8s_container(name=PYTORCHJOB_CONTAINER, image=image, command=command,
                                  env={**(env or {}), **(extra_env or {})}, gpus=gpus_per_node, cpu=cpu,
                                  memory=memory, volume_claim=volume_claim, mount_path=mount_path,
                                  working_dir=working_dir, ports=ports)
        pod_spec: dict = {"containers": [container], "volumes": _volumes(volume_claim)}
        if service_account:
            pod_spec["serviceAccountName"] = service_account
        if node_selector:
            pod_spec["nodeSelector"] = dict(node_selector)
        return {"replicas": replicas, "restartPolicy": "Never",
                "template": {"metadata": {"labels": {"app": "llavacot-train"}}, "spec": pod_spec}}

    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "llavacot-train"}},
        "spec": {
            "nprocPerNode": str(gpus_per_node),
            "runPolicy": {"backoffLimit": backoff_limit, "cleanPodPolicy": "None"},
            "pytorchReplicaSpecs": {
                "Master": replica(1, master_env),
                "Worker": replica(nnodes - 1, None),
            },
        },
    }


def k8s_name(text: str, limit: int = 63) -> str:
    """A DNS-1123 label from any text (lower case, digits and '-', at most `limit` characters)."""
    out = "".join(c if c.isalnum() and c.isascii() else "-" for c in text.lower())
    out = "-".join(part for part in out.split("-") if part)
    return (out[:limit].rstrip("-")) or "train"
