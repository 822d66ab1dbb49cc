#!/usr/bin/env python3
"""Where a Tessera server's CPU goes, by thread and by layer, from
`perf script -F comm,tid,ip,sym,dso` output of the server's process (see
scripts/profile-server.sh). Prints Markdown tables: share of the server's
samples by thread, by the layer of the innermost frame (self time; kernel
samples by the system call they serve), and by the layers a sample passes
through (inclusive)."""
import collections
import re
import sys

# Innermost user frame -> layer, first match wins.
USER_LAYERS = [
    ("redb", "store: redb"), ("rustls", "TLS: rustls"), ("ring::", "TLS: crypto"),
    ("aws_lc", "TLS: crypto"), ("ring_core", "TLS: crypto"), ("bytes::", "HTTP: hyper"),
    ("http::", "HTTP: hyper"), ("hash", "hashing"), ("futures_util", "runtime: tokio"),
    ("mpmc", "report log"), ("hyper", "HTTP: hyper"), ("axum", "HTTP: axum/tower"),
    ("tower", "HTTP: axum/tower"), ("serde", "JSON"), ("tessera_proto", "JSON"),
    ("tokio", "runtime: tokio"), ("tracing", "tracing"), ("ed25519", "signing"),
    ("curve25519", "signing"), ("sha2", "hashing"), ("openraft", "raft"),
    ("report_log", "report log"), ("tessera_core::report", "report log"),
    ("tessera_server::store", "store: tessera"), ("tessera_server::issuer", "issuer"),
    ("tessera_server::service", "service"), ("tessera_server::api", "API handlers"),
    ("tessera_server", "server, other"), ("tessera_core", "core"),
]
ALLOCATOR = ("malloc", "mi_", "_mi_", "mimalloc", "libc_free", "realloc", "_int_", "tcache_", "unlink_chunk",
             "free_perturb", "rust_no_alloc_shim")
# Kernel samples by the call they serve.
KERNEL_CALLS = [
    ("sys_fdatasync", "fdatasync"), ("sys_fsync", "fdatasync"), ("tcp_sendmsg", "TCP send"),
    ("tcp_recvmsg", "TCP receive"), ("epoll_wait", "epoll"), ("futex", "futex (wake, wait)"),
    ("vfs_write", "file write"), ("vfs_read", "file read"), ("exc_page_fault", "page faults"),
    ("schedule", "scheduling"),
]
# A sample passes through these (inclusive).
THROUGH = [
    ("tessera_server::api", "API handlers"), ("per_address", "per-address limit"),
    ("auth::identify", "authentication"), ("hyper::", "hyper"), ("rustls", "rustls"),
    ("serde_json", "serde_json"), ("tessera_server::service", "request service"),
    ("tessera_server::issuer", "issuer"), ("tessera_server::store", "grant store"),
    ("redb::", "redb"), ("report_log", "report log"), ("sys_fdatasync", "fdatasync"),
    ("tcp_sendmsg", "TCP send"), ("tcp_recvmsg", "TCP receive"),
]


def samples(path):
    sample = None
    for line in open(path, errors="replace"):
        if not line.strip():
            if sample:
                yield sample
            sample = None
        elif not line[0].isspace():
            thread = re.sub(r"\s+\d+\s*$", "", line).strip()
            sample = {"thread": thread, "frames": []}
        elif sample is not None:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                match = re.match(r"(.*) \((.*)\)$", parts[1])
                sample["frames"].append(match.groups() if match else (parts[1], ""))
    if sample:
        yield sample


def layer(frames):
    sym, dso = frames[0] if frames else ("", "")
    if "kernel" in dso:
        kernel = " ".join(f[0] for f in frames if "kernel" in f[1])
        for key, name in KERNEL_CALLS:
            if key in kernel:
                return "kernel: " + name
        return "kernel: other"
    # libc's frames often come through as inlined: named by symbol.
    if any(k in sym for k in ALLOCATOR):
        return "allocator"
    if any(k in sym for k in ("__memcpy", "__memmove", "__memset", "memcmp")):
        return "memcpy, memset"
    if "libc" in dso or "vdso" in dso:
        return "libc, other"
    for key, name in USER_LAYERS:
        if key in sym:
            return name
    return "other (inlined or unnamed)"


def table(title, counts, total):
    print(f"\n| {title} | samples | share |\n|---|--:|--:|")
    for name, n in counts.most_common():
        print(f"| {name} | {n} | {100 * n / total:.1f} % |")


def main():
    all_samples = list(samples(sys.argv[1]))
    total = len(all_samples) or 1
    threads, layers, through = (collections.Counter() for _ in range(3))
    for sample in all_samples:
        threads[sample["thread"]] += 1
        layers[layer(sample["frames"])] += 1
        seen = set()
        for sym, _ in sample["frames"]:
            for key, name in THROUGH:
                if key in sym and name not in seen:
                    seen.add(name)
                    through[name] += 1
    print(f"{len(all_samples)} samples of the server process.")
    table("thread", threads, total)
    table("layer of the innermost frame (self)", layers, total)
    table("passes through (inclusive)", through, total)


if __name__ == "__main__":
    main()
