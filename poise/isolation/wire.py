"""The hook protocol's wire format: a JSON header and raw tensor bytes, never pickle.

    frame   = length (8 bytes, little-endian) + JSON header + the tensors' bytes, in header order
    header  = {..., "tensors": [{"name", "dtype", "shape"}, ...]}

Both sides of the hook contract speak it; only the trusted side's reader matters for safety, so it
trusts nothing it reads: the header has a size cap, dtypes come from a short list, every shape is
checked against the byte count, and the total is capped by the caller before anything is allocated.
Decoding builds tensors from bytes (``torch.frombuffer``): no code runs, whatever the peer sends.
"""

from __future__ import annotations

import json
import math
import os
import select
import time

import torch
from torch import Tensor

HEADER_MAX = 1 << 20  # a header is a few hundred bytes; a megabyte of JSON is an attack or a bug
DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "int32": torch.int32,
          "bool": torch.bool, "float16": torch.float16, "bfloat16": torch.bfloat16}
NAMES = {v: k for k, v in DTYPES.items()}


class WireError(Exception):
    """The peer broke the protocol (closed the pipe, sent a malformed or oversized frame, missed the deadline)."""

    def __init__(self, message: str, kind: str = "protocol"):
        super().__init__(message)
        self.kind = kind  # "protocol" | "closed" | "timeout"


def encode(header: dict, tensors: dict[str, Tensor] | None = None) -> bytes:
    """One frame. Tensors travel from the CPU, contiguous, in their own dtype."""
    tensors = tensors or {}
    specs, blobs = [], []
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        if t.dtype not in NAMES:
            raise TypeError(f"{name}: dtype {t.dtype} cannot travel on the hook wire")
        specs.append({"name": name, "dtype": NAMES[t.dtype], "shape": list(t.shape)})
        # bytes through a uint8 view: works for bool and bfloat16, which numpy cannot hold
        blobs.append(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    head = json.dumps({**header, "tensors": specs}, allow_nan=False).encode()
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def write_frame(fd: int, header: dict, tensors: dict[str, Tensor] | None = None,
                deadline: float = math.inf) -> None:
    """Write one frame. With a finite ``deadline`` the fd must be non-blocking: a peer that stops reading
    (its pipe full) cannot hold the writer past the deadline."""
    data = memoryview(encode(header, tensors))
    while data:
        if math.isfinite(deadline):
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise WireError("the peer stopped reading before the deadline", "timeout")
            _, ready, _ = select.select([], [fd], [], min(wait, 1.0))
            if not ready:
                continue
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            continue


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    chunks, got = [], 0
    while got < n:
        wait = deadline - time.monotonic()
        if wait <= 0:
            raise WireError("no answer before the deadline", "timeout")
        if math.isfinite(wait):
            ready, _, _ = select.select([fd], [], [], min(wait, 1.0))
            if not ready:
                continue
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise WireError("the peer closed the pipe", "closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, max_bytes: int, deadline: float = math.inf) -> tuple[dict, dict[str, Tensor]]:
    """Read one frame of at most ``max_bytes`` of tensor data before ``deadline`` (time.monotonic())."""
    n = int.from_bytes(_read_exact(fd, 8, deadline), "little")
    if not 0 < n <= HEADER_MAX:
        raise WireError(f"a frame header of {n} bytes (the limit is {HEADER_MAX})")
    try:
        header = json.loads(_read_exact(fd, n, deadline))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: "[[[[..." nested deep
        raise WireError(f"a frame header that is not JSON ({type(e).__name__})") from None
    if not isinstance(header, dict) or not isinstance(header.get("tensors", []), list):
        raise WireError("a frame header that is not an object with a list of tensors")
    sizes = []
    for spec in header.get("tensors", []):
        if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and spec.get("dtype") in DTYPES
                and isinstance(spec.get("shape"), list) and len(spec["shape"]) <= 8
                and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 31 for d in spec["shape"])):
            raise WireError(f"a malformed tensor description: {str(spec)[:200]}")
        if math.prod(max(d, 1) for d in spec["shape"]) >= 1 << 40:  # torch cannot even stride such a shape
            raise WireError(f"a tensor of impossible shape {spec['shape']}")
        sizes.append(math.prod(spec["shape"]) * torch.empty((), dtype=DTYPES[spec["dtype"]]).element_size())
    if sum(sizes) > max_bytes:
        raise WireError(f"a frame of {sum(sizes)} tensor bytes where at most {max_bytes} were expected")
    tensors = {}
    for spec, size in zip(header.pop("tensors", []), sizes):
        raw = bytearray(_read_exact(fd, size, deadline)) if size else bytearray()
        flat = torch.frombuffer(raw, dtype=torch.uint8) if size else torch.empty(0, dtype=torch.uint8)
        tensors[spec["name"]] = flat.view(DTYPES[spec["dtype"]]).reshape(spec["shape"])
    return header, tensors
