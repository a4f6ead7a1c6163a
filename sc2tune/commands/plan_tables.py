"""What ``sc2tune plan`` prints: a :class:`~sc2tune.planning.plan.MemoryPlan`, a
:class:`~sc2tune.planning.cluster.ClusterPlan` or a weight footprint as a rich table, or one JSON line."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from sc2tune.planning.plan import GiB, MemoryPlan

if TYPE_CHECKING:
    from sc2tune.planning.cluster import ClusterPlan


def gib(n: int) -> str:
    """Bytes as GiB with two decimals (MiB below 0.1 GiB)."""
    return f"{n / GiB:.2f} GiB" if n >= 0.1 * GiB else f"{n / 2**20:.1f} MiB"


def print_plan(plan: MemoryPlan, console: Console | None = None) -> None:
    """The plan as a table: one row per component, the total, the fit and the suggestions."""
    console = console or Console()
    title = (f"{plan.model} on {plan.device}: {plan.method} ({plan.load_mode} base), batch {plan.batch_size} x {plan.max_length} "
             f"tokens, grad accum {plan.grad_accum}, checkpointing {'on' if plan.gradient_checkpointing else 'off'}")
    table = Table(title=title, title_justify="left")
    table.add_column("component")
    table.add_column("memory", justify="right")
    table.add_column("note", overflow="fold")
    peak = max(c.bytes for c in plan.components if c.name in ("logits and loss", "backward workspace"))
    for c in plan.components:
        transient = c.name in ("logits and loss", "backward workspace")
        mark = " (peak)" if transient and c.bytes == peak else " (not at peak)" if transient else ""
        table.add_row(c.name, gib(c.bytes), c.note + mark)
    table.add_section()
    table.add_row("[bold]total per device[/bold]", f"[bold]{gib(plan.total_bytes)}[/bold]", "")
    console.print(table)
    console.print(f"activations: {gib(plan.activations_no_checkpointing)} without gradient checkpointing, "
                  f"{gib(plan.activations_checkpointing)} with; loss: {gib(plan.loss_chunked)} chunked "
                  f"(sc2tune), {gib(plan.loss_full_logits)} with full logits")
    if plan.gpu_memory is None:
        return
    verdict = "[green]fits[/green]" if plan.fits else "[red]does not fit[/red]"
    console.print(f"{verdict} in {gib(plan.gpu_memory)} (using at most 95% of it)")
    for s in plan.suggestions:
        status = "fits" if s.fits else "still too big"
        console.print(f"  - {s.description}: {gib(s.total_bytes)} ({status}); add:")
        # the overrides on a line of their own, never wrapped, so the line pastes into a command as it is
        console.print(f"      {' '.join(s.overrides)}", soft_wrap=True, highlight=False, markup=False)
    if not plan.fits and not plan.suggestions:
        console.print("  no change the planner knows makes it fit: use a larger device or shard (FSDP/ZeRO-3)")


def _count(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _duration(hours: float) -> str:
    if hours >= 1:
        return f"{hours:.1f} h"
    if hours * 60 >= 1:
        return f"{hours * 60:.1f} min"
    return f"{hours * 3600:.0f} s"


def print_cluster(cluster: ClusterPlan, console: Console | None = None, *,
                  compare_hours: float | None = None) -> None:
    """FSDP per-GPU memory and the time estimate, a few lines (the table above is the DDP / one-GPU figure)."""
    console = console or Console()
    f, n, gpu = cluster.fsdp, cluster.gpus, cluster.gpu
    where = f"{n} x {gpu.name}"
    verdict = "[green]fits[/green]" if f.fits else "[red]does not fit[/red]"
    buffers = f" + buffers {gib(f.buffers)}" if f.buffers else ""
    if n > 1:  # on one GPU the table above is the figure
        console.print(f"FSDP full sharding over {where}: [bold]{gib(f.total)} per GPU[/bold] ({verdict}): "
                  f"sharded weights, gradients and optimizer {gib(f.sharded_total)} / {n} = "
                      f"{gib(f.sharded_per_gpu)}{buffers} + activations and peak {gib(f.activations)} + gathered "
                      f"units {gib(f.gathered)} + overhead {gib(f.overhead)}")
    t = cluster.time
    if t is None:
        return
    fl = t.flops
    console.print(f"time: {_count(t.tokens_per_epoch)} tokens per epoch ({t.tokens_source}); "
                  f"{fl.formula} = {fl.train / 1e9:.1f} GFLOP per token (N = {_count(fl.matmul_params)} "
                  f"matmul weights, A = {fl.attention_per_token / 1e9:.2f} GFLOP)")
    console.print(f"  on {where} ({t.peak_tflops:g} TFLOPS bf16 dense each) at an assumed MFU of {t.mfu:.2f}: "
                  f"[bold]{_duration(t.hours_per_epoch)} per epoch, {_duration(t.hours_total)} for {t.epochs:g} "
                  f"epoch{'s' if t.epochs != 1 else ''}[/bold] (--mfu to change the assumption)")
    if compare_hours is not None:
        console.print(f"  a reported {compare_hours:g} h for the whole run means an MFU of "
                      f"{t.implied_mfu(compare_hours):.3f} ({100 * t.implied_mfu(compare_hours):.1f}% of the peak)")


def print_footprint(footprint: dict[str, Any], console: Console | None = None) -> None:
    """Weight bytes per load mode as a table."""
    console = console or Console()
    table = Table(title=f"{footprint['model']}: {footprint['params']:,} parameters", title_justify="left")
    for col in ("mode", "get_memory_footprint", "+ quantisation constants", "unquantised parts"):
        table.add_column(col, justify="right" if col != "mode" else "left")
    for mode, n in footprint["weights_bytes"].items():
        table.add_row(mode, gib(n), gib(footprint["resident_bytes"][mode]),
                      ", ".join(footprint["skipped_linears"].get(mode, [])) or "-")
    console.print(table)


def print_json(data: dict[str, Any]) -> None:
    """One JSON object on one line (the last line of stdout)."""
    print(json.dumps(data, sort_keys=False))
