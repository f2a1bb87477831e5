"""Which GPU this worker uses: decided on the executor, never on the driver.

As spark-rapids-ml does: the GPU Spark assigned to the task (``spark.task.resource.gpu.amount``
with a discovery script) when there is one, else the partition id modulo the GPU count
(local mode, several tasks sharing one machine's GPUs), else GPU 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def choose_gpu(count: int, *, task_gpus: Sequence[str] = (), partition_id: int | None = None,
               visible_devices: str | None = None) -> int:
    """The CUDA device index (as torch numbers them) for this worker.

    ``task_gpus`` are the addresses Spark assigned to the task; they are physical ids, so
    when ``CUDA_VISIBLE_DEVICES`` (``visible_devices``) renumbers the GPUs the address is
    looked up in it.
    """
    if count < 1:
        raise ValueError("no GPU is visible to this worker")
    if task_gpus:
        address = str(task_gpus[0]).strip()
        if visible_devices:
            visible = [d.strip() for d in visible_devices.split(",") if d.strip()]
            if address in visible:
                return visible.index(address)
            if len(visible) == 1:  # the task sees just its own GPU
                return 0
        if address.isdigit() and int(address) < count:
            return int(address)
        raise ValueError(
            f"Spark assigned GPU {address!r} to this task but only {count} GPU(s) are visible "
            f"(CUDA_VISIBLE_DEVICES={visible_devices!r})")
    if partition_id is not None:
        return partition_id % count
    return 0


def task_gpu_context() -> tuple[tuple[str, ...], int | None]:
    """``(gpu addresses, partition id)`` of the running Spark task; empty outside Spark."""
    try:
        from pyspark import TaskContext

        context = TaskContext.get()
    except ImportError:
        return (), None
    if context is None:
        return (), None
    addresses: tuple[str, ...] = ()
    try:
        gpu = context.resources().get("gpu")
        if gpu is not None:
            addresses = tuple(gpu.addresses)
    except Exception:  # resources() needs Spark 3+; absent means "not assigned"
        addresses = ()
    return addresses, context.partitionId()


def worker_gpu(count: int) -> int:
    """:func:`choose_gpu` for the current process."""
    task_gpus, partition_id = task_gpu_context()
    return choose_gpu(count, task_gpus=task_gpus, partition_id=partition_id,
                      visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
