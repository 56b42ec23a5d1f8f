"""Train an SFT warm start with given SFTConfig fields (2000 steps), save it. usage: exp2.py NAME 'json'"""
import sys, json, time, torch
cfg = json.loads(sys.argv[2]); name = sys.argv[1]
torch.set_num_threads(cfg.get("threads", 1))
import poise.sandbox.sft as sft
from poise.sandbox.model import ModelConfig
m_cfg = ModelConfig(**cfg.get("model", dict(n_layer=3, n_head=4, n_embd=128, block_size=160)))
s_cfg = sft.SFTConfig(**{"steps": 2000, "batch_size": 64, **cfg.get("sft", {})})
t0 = time.time()
def prog(i, n, loss):
    if i % 250 == 0: print(name, i, round(loss, 3), round(time.time() - t0), flush=True)
model = sft.train_sft(m_cfg, s_cfg, set(), progress=prog)
print(name, "sft", round(time.time()-t0), "s", flush=True)
torch.save(model.state_dict(), f"/tmp/tune/{name}.pt")
