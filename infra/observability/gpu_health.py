"""GPU health alerts and the DCGM counters they need.

Five alerts in group `gpu-inference.gpu-health`, each with a runbook line:

- `GpuXidHardwareError` (critical): a GPU reported an XID that means failing
  hardware or a GPU lost to the host (NVIDIA, "XID Errors", docs.nvidia.com/deploy/xid-errors):
  48 double-bit ECC, 63/64 row-remapping pending/failed, 74 NVLink, 79 fallen off the bus,
  92 high single-bit ECC rate, 94/95 contained/uncontained ECC, 119/120 GSP. Karpenter's
  NodeRepair replaces such a node once the EKS node monitoring agent marks it
  `AcceleratedHardwareReady=False` for 10 minutes; the alert says so first.
- `GpuXidError` (warning): any other XID (13 graphics exception, 31 MMU fault, 43
  stopped): usually the application's fault; the node stays.
- `GpuEccDoubleBitErrors` (critical): uncorrectable (double-bit) volatile ECC errors
  counted, or row remapping failed.
- `GpuThermalThrottling` (warning): the GPU spent more than a tenth of its time
  throttled by thermal limits (`DCGM_FI_DEV_THERMAL_VIOLATION`, ns of throttling).
- `GpuNodeSilent` (warning): a node Karpenter launched with GPUs
  (`karpenter.k8s.aws/instance-gpu-count` >= 1, read from kube-state-metrics) has
  had no DCGM series for 15 minutes: the exporter, the driver or the GPU is gone.

`DCGM_FI_DEV_XID_ERRORS` (the last XID, a gauge) and the row-remap fields are in
dcgm-exporter's default counters (chart 4.8.2 `metrics-configmap.yaml`, the
exporter's `etc/default-counters.csv` at tag 4.5.3-4.8.2); the double-bit ECC and
thermal-violation counters are commented out there. `COUNTERS` is that default
set plus those two, rendered into the chart's own counters ConfigMap through its
`customMetrics` value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain import contract
from infra.observability import DCGM_GPU_UTIL, DCGM_NODE_LABEL, KSM_NODE_LABELS, ksm_label, selector

GPU_XID_HARDWARE_ERROR = "GpuXidHardwareError"
GPU_XID_ERROR = "GpuXidError"
GPU_ECC_DOUBLE_BIT_ERRORS = "GpuEccDoubleBitErrors"
GPU_THERMAL_THROTTLING = "GpuThermalThrottling"
GPU_NODE_SILENT = "GpuNodeSilent"
ALERT_NAMES = (
    GPU_XID_HARDWARE_ERROR,
    GPU_XID_ERROR,
    GPU_ECC_DOUBLE_BIT_ERRORS,
    GPU_THERMAL_THROTTLING,
    GPU_NODE_SILENT,
)
GROUP = "gpu-inference.gpu-health"

DCGM_XID = "DCGM_FI_DEV_XID_ERRORS"
DCGM_ECC_DBE = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"
DCGM_ROW_REMAP_FAILURE = "DCGM_FI_DEV_ROW_REMAP_FAILURE"
DCGM_THERMAL_VIOLATION = "DCGM_FI_DEV_THERMAL_VIOLATION"
HARDWARE_XIDS = (48, 63, 64, 74, 79, 92, 94, 95, 119, 120)
# Node labels these alerts read from kube_node_labels (kube-state-metrics' metricLabelsAllowlist).
KUBE_STATE_METRICS_NODE_LABELS = (contract.INSTANCE_GPU_COUNT_LABEL,)
_PER_GPU = f"{DCGM_NODE_LABEL}, gpu, UUID"

# dcgm-exporter chart 4.8.2's default counters (templates/metrics-configmap.yaml), in order.
DEFAULT_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C)."),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "Total energy consumption since boot (in mJ)."),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries."),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %)."),
    ("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %)."),
    ("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %)."),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered."),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
    ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter", "Total number of NVLink bandwidth counters for all lanes."),
    ("DCGM_FI_DEV_VGPU_LICENSE_STATUS", "gauge", "vGPU License status"),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for uncorrectable errors"),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter", "Number of remapped rows for correctable errors"),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed"),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active."),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge", "Ratio of cycles the tensor (HMMA) pipe is active."),
    (
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "gauge",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
    ),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", "gauge", "The rate of data transmitted over the PCIe bus in bytes per second."),
    ("DCGM_FI_PROF_PCIE_RX_BYTES", "gauge", "The rate of data received over the PCIe bus in bytes per second."),
)
# What the health alerts need beyond the defaults (both listed, commented out, in the default CSV).
HEALTH_COUNTERS: tuple[tuple[str, str, str], ...] = (
    (DCGM_ECC_DBE, "counter", "Total number of double-bit volatile ECC errors."),
    (DCGM_THERMAL_VIOLATION, "counter", "Throttling duration due to thermal constraints (in ns)."),
)
COUNTERS = DEFAULT_COUNTERS + HEALTH_COUNTERS


def counters_csv() -> str:
    """The exporter's collectors file (`DCGM FIELD, Prometheus metric type, help message` per line)."""
    header = "# Format: DCGM FIELD, Prometheus metric type, help message (infra/observability/gpu_health.py)\n"
    return header + "".join(f"{field}, {kind}, {text}\n" for field, kind, text in COUNTERS)


@dataclass(frozen=True)
class HealthParams:
    severity_hardware: str = "critical"
    severity_xid: str = "warning"
    severity_ecc: str = "critical"
    severity_thermal: str = "warning"
    severity_silent: str = "warning"
    xid_window: str = "1h"  # how long an application XID stays news
    ecc_window: str = "10m"
    thermal_share: float = 0.1  # of the time throttled for heat
    thermal_window: str = "5m"
    thermal_for: str = "10m"
    # A node launches, joins and pulls the exporter image well within this.
    silent_for: str = "15m"


def xid_hardware_expr() -> str:
    codes = " or ".join(f"{DCGM_XID} == {code}" for code in HARDWARE_XIDS)
    return f"max by ({_PER_GPU}) ({codes})"


def xid_other_expr(p: HealthParams) -> str:
    """Other XIDs, for `xid_window` after the gauge (the last XID, kept until the exporter restarts) changed."""
    codes = " or ".join(f"{DCGM_XID} == {code}" for code in HARDWARE_XIDS)
    return f"max by ({_PER_GPU}) (({DCGM_XID} > 0 unless ({codes})) and changes({DCGM_XID}[{p.xid_window}]) > 0)"


def ecc_expr(p: HealthParams) -> str:
    dbe = f"increase({DCGM_ECC_DBE}[{p.ecc_window}]) > 0"
    return f"max by ({_PER_GPU}) ({dbe} or {DCGM_ROW_REMAP_FAILURE} > 0)"


def thermal_expr(p: HealthParams) -> str:
    """Share of the time the GPU was throttled for heat (the counter is in ns)."""
    return f"max by ({_PER_GPU}) (rate({DCGM_THERMAL_VIOLATION}[{p.thermal_window}]) / 1e9) > {p.thermal_share:g}"


def silent_expr() -> str:
    """GPU nodes (per Karpenter's instance-gpu-count label) with no DCGM series; value 1."""
    gpu_count = ksm_label(contract.INSTANCE_GPU_COUNT_LABEL)
    has_gpus = gpu_count + '=~"[1-9][0-9]*"'
    nodes = f"max by (node) ({selector(KSM_NODE_LABELS, has_gpus)})"
    reporting = (
        f'label_replace(max by ({DCGM_NODE_LABEL}) ({DCGM_GPU_UTIL}), "node", "$1", "{DCGM_NODE_LABEL}", "(.+)")'
    )
    return f"{nodes}\nunless on (node)\n{reporting}"


def _rule(alert: str, expr: str, wait: str, severity: str, summary: str, description: str, runbook: str) -> dict:
    return {
        "alert": alert,
        "expr": expr,
        "for": wait,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description, "runbook": runbook},
    }


_GPU = "GPU {{ $labels.gpu }} ({{ $labels.UUID }}) on {{ $labels.Hostname }}"


def rule_group(params: HealthParams | None = None) -> dict[str, Any]:
    p = params or HealthParams()
    rules = [
        _rule(
            GPU_XID_HARDWARE_ERROR,
            xid_hardware_expr(),
            "0m",
            p.severity_hardware,
            f"{_GPU} reported hardware XID {{{{ $value }}}}",
            f"{_GPU} reported XID {{{{ $value }}}}, one of {', '.join(map(str, HARDWARE_XIDS))}: failing memory,"
            " NVLink or GSP, or a GPU lost to the host.",
            "Cordon the node and drain it (kubectl drain --ignore-daemonsets); Karpenter's node repair replaces it"
            " once AcceleratedHardwareReady has been False for 10 minutes; if the condition never turns False,"
            " delete the NodeClaim. Open an AWS support case with the instance ID if it recurs.",
        ),
        _rule(
            GPU_XID_ERROR,
            xid_other_expr(p),
            "0m",
            p.severity_xid,
            f"{_GPU} reported XID {{{{ $value }}}}",
            f"{_GPU} reported XID {{{{ $value }}}}: usually an application fault (13, 31, 43), not the hardware.",
            "Look at the logs of the pod on that GPU (kubectl logs, dmesg via the node monitoring agent's"
            " NodeDiagnostic); restart the pod. Recurring XIDs across pods: drain the node.",
        ),
        _rule(
            GPU_ECC_DOUBLE_BIT_ERRORS,
            ecc_expr(p),
            "0m",
            p.severity_ecc,
            f"{_GPU} has uncorrectable memory errors",
            f"{_GPU} counted double-bit (uncorrectable) ECC errors within {p.ecc_window}, or its row remapping"
            " failed: results computed on it may be wrong.",
            "Drain the node now and let Karpenter replace it (delete the NodeClaim if repair does not); a failed"
            " row remap needs the instance stopped and started on other hardware.",
        ),
        _rule(
            GPU_THERMAL_THROTTLING,
            thermal_expr(p),
            p.thermal_for,
            p.severity_thermal,
            f"{_GPU} is throttled for heat",
            f"{_GPU} spent {{{{ $value | humanizePercentage }}}} of the last {p.thermal_window} throttled by"
            " thermal limits: slower answers than its siblings.",
            "Compare DCGM_FI_DEV_GPU_TEMP with the other GPUs; if one node runs hot, drain it and let Karpenter"
            " launch another; if all do, check the power and clock settings of the AMI.",
        ),
        _rule(
            GPU_NODE_SILENT,
            silent_expr(),
            p.silent_for,
            p.severity_silent,
            "GPU node {{ $labels.node }} reports no DCGM metrics",
            f"Node {{{{ $labels.node }}}} was launched with GPUs but has sent no DCGM series for {p.silent_for}:"
            " the dcgm-exporter pod, the NVIDIA driver or the GPU is gone.",
            "kubectl -n monitoring get pods -l app.kubernetes.io/name=dcgm-exporter -o wide for that node; check"
            " the device plugin pod and the node's AcceleratedHardwareReady condition; drain the node if the"
            " driver is gone.",
        ),
    ]
    return {"name": GROUP, "rules": rules}
