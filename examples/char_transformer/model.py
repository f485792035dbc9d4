"""A character-level transformer language model, nanoGPT-style, on the stdlib's docstrings (no download).

Causal self-attention blocks (pre-norm), AdamW with weight decay on the matrices only, a linear
warmup then cosine decay stepped every optimizer step and sized from the run (`self.scorch`), and
gradient clipping from the command line (--clip-grad-norm 1.0, as nanoGPT does). `main` is the
next-character accuracy; `perplexity` and the loss are logged beside it. metric_state makes it run
with --valid streaming as well.
"""

import math

import torch

VOCAB = 128  # ASCII codes (dataset.py maps anything else to 127)


class Block(torch.nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.attention = torch.nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width),
                                       torch.nn.Dropout(dropout))

    def forward(self, x, mask):
        h = self.norm1(x)
        x = x + self.attention(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class Network(torch.nn.Module):
    def __init__(self, width: int = 128, heads: int = 4, layers: int = 2, context: int = 64, dropout: float = 0.1):
        super().__init__()
        self.tokens = torch.nn.Embedding(VOCAB, width)
        self.positions = torch.nn.Embedding(context, width)
        self.blocks = torch.nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, VOCAB, bias=False)
        self.head.weight = self.tokens.weight  # tied, as in GPT-2
        for table in (self.tokens, self.positions):  # GPT-2's small init: logits start near uniform
            torch.nn.init.normal_(table.weight, std=0.02)

    def forward(self, inputs):
        codes = inputs[0]
        t = codes.shape[1]
        x = self.tokens(codes) + self.positions(torch.arange(t, device=codes.device))
        mask = torch.triu(torch.full((t, t), float("-inf"), device=codes.device), diagonal=1)
        for block in self.blocks:
            x = block(x, mask)
        return [self.head(self.norm(x))]


class Socket:
    def __init__(self, model, lr: float = 3e-3, warmup: int = 50):
        self.model = model
        self.train_modules = torch.nn.ModuleList([model])
        # Weight decay on matrices only (nanoGPT): not on biases, norms or embeddings' positions.
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                           lr=lr, betas=(0.9, 0.95))
        total = self.scorch.total_steps  # the run's optimizer steps: scorch sets self.scorch before __init__

        def warmup_then_cosine(step):
            if step < warmup:
                return (step + 1) / warmup
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_then_cosine)
        self.scheduler_interval = "step"

    def criterion(self, outputs, targets):
        return torch.nn.functional.cross_entropy(outputs[0].reshape(-1, VOCAB), targets[0].reshape(-1))

    def metric_state(self, outputs, targets):
        logits, codes = outputs[0], targets[0]
        return {"correct": (logits.argmax(-1) == codes).sum(), "chars": codes.numel(),
                "nll": torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), codes.reshape(-1), reduction="sum")}

    def metrics_from_state(self, state):
        return {"main": state["correct"] / state["chars"], "perplexity": torch.exp(state["nll"] / state["chars"])}

    def metrics(self, outputs, targets):
        return self.metrics_from_state(self.metric_state(outputs, targets))

    @torch.no_grad()
    def process(self, inputs, outputs):
        # Greedy continuation of the first test window: what the model writes, in TensorBoard's text tab.
        codes = inputs[0][:1]
        for _ in range(32):
            nxt = self.model([codes[:, -self.model.positions.num_embeddings:]])[0][:, -1].argmax(-1)
            codes = torch.cat([codes, nxt[:, None]], dim=1)
        text = "".join(chr(c) for c in codes[0].tolist())
        return {"texts": {"continuation": text}}
