"""How the shipped standard warm start was built, without repeating the first 2,000-step cycle: load the
first cycle's policy (FIRST.pt: train_sft's first cycle, unchanged from the previous warm start) and run
train_sft's restart cycle on it, then write poise/sandbox/assets/sft-<key>.pt and SHA256SUMS.

    python benchmarks/tuning/build_asset.py FIRST.pt

Training from nothing (what a changed configuration does) runs both cycles: load_or_train_sft."""
import hashlib
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from poise.evaluation.fidelity import get_fidelity  # noqa: E402
from poise.sandbox import sft  # noqa: E402
from poise.sandbox.model import TinyGPT  # noqa: E402

torch.set_num_threads(2)
fid = get_fidelity("standard")
cfg = fid.sft
model = TinyGPT(fid.model)
model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
model.train()
t0 = time.time()
sft._sft_cycle(model, cfg, random.Random(f"sft/{cfg.seed}/restart"), set(), cfg.restart_steps, cfg.restart_lr, 0,
               "fp32", lambda i, n, loss: print(i, n, round(loss, 3), flush=True) if i % 250 == 0 else None,
               cfg.steps, cfg.steps + cfg.restart_steps, "cpu")
model.eval()
out = sft.ASSETS / f"sft-{sft.sft_key(fid.model, cfg)}.pt"
torch.save(model.state_dict(), out)
digest = hashlib.sha256(out.read_bytes()).hexdigest()
(sft.ASSETS / "SHA256SUMS").write_text(f"{digest}  {out.name}\n")
print("wrote", out, digest, f"{time.time() - t0:.0f}s")
