"""Peak memory of validation: the whole-set path against --valid streaming, as the validation set grows 10x.

Each configuration is one scorch-train run in a fresh process (one training step, then validation over
a set of N samples through a 16 -> VOCAB linear model: every output row is VOCAB floats, as a language
model's logits are). The table shows the process's peak resident memory above what it held once torch
and scorch were imported, and the growth from N to 10N. The whole-set small run is made twice (A/A):
the difference between those two is the noise floor of the figure.

    python bench/streaming_memory.py [--small 1000] [--vocab 8192]

The dataset makes each item from its index, so the set itself takes no memory: what grows is what
validation keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

MODEL = '''
import torch

class Network(torch.nn.Module):
    def __init__(self, vocab=8192):
        super().__init__()
        self.head = torch.nn.Linear(16, vocab)

    def forward(self, inputs):
        return [self.head(inputs[0])]


class Socket:
    def __init__(self, model):
        self.model = model
        self.train_modules = torch.nn.ModuleList([model])
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def criterion(self, outputs, targets):
        return torch.nn.functional.cross_entropy(outputs[0], targets[0])

    def metrics(self, outputs, targets):
        return self.metrics_from_state(self.metric_state(outputs, targets))

    def metric_state(self, outputs, targets):
        return {"correct": (outputs[0].argmax(1) == targets[0]).sum(), "seen": len(targets[0])}

    def metrics_from_state(self, state):
        return {"main": state["correct"] / state["seen"], "seen": state["seen"]}
'''

DATASET = '''
import torch

class DataSetIndex:
    def __init__(self, path, valid=1000, vocab=8192):
        self.sizes = {"train": 64, "valid": valid, "test": 0}
        self.vocab = vocab

class DataSet:
    def __init__(self, index, mode="train"):
        self.n, self.vocab = index.sizes[mode], index.vocab

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return [torch.randn(16, generator=g)], [torch.randint(0, self.vocab, (), generator=g)]
'''

CHILD = textwrap.dedent('''
    import json, resource, sys
    import torch
    from scorch.cli import train_main
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = train_main(sys.argv[1:])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"code": code, "before_kib": before, "peak_kib": peak}))
''')


def run(work: str, name: str, valid: int, vocab: int, mode: str) -> dict:
    argv = ["--model", os.path.join(work, "model.py"), "--dataset", os.path.join(work, "dataset.py"), "--dataset-path", work,
            "--dataset-args", json.dumps({"valid": valid, "vocab": vocab}), "--model-args", json.dumps({"vocab": vocab}),
            "--epochs", "1", "--max-train-iterations", "1", "--batch-size", "256", "--valid", mode, "--sanity-batches", "0",
            "--seed", "0", "--headless", "--no-telemetry", "--no-tensorboard", "--run-dir", os.path.join(work, name)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env, timeout=1800)
    line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode or not line.startswith("{"):
        raise SystemExit(f"streaming_memory.py: {name} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    result = json.loads(line)
    result["growth_mib"] = (result["peak_kib"] - result["before_kib"]) / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000, help="validation samples of the small set (the large one: 10x)")
    parser.add_argument("--vocab", type=int, default=8192, help="outputs per sample")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scorch-streaming-bench-") as work:
        for name, text in (("model.py", MODEL), ("dataset.py", DATASET)):
            with open(os.path.join(work, name), "w") as fh:
                fh.write(text)
        rows = []
        for mode, valid, label in (("whole", args.small, "whole, N (A)"), ("whole", args.small, "whole, N (A again)"),
                                   ("whole", 10 * args.small, "whole, 10N"), ("streaming", args.small, "streaming, N"),
                                   ("streaming", 10 * args.small, "streaming, 10N")):
            rows.append((label, valid, run(work, f"{mode}-{valid}-{len(rows)}", valid, args.vocab, mode)))
    outputs_mib = 10 * args.small * args.vocab * 4 / 2**20
    print(f"validation peak memory above the imports (MiB); {args.vocab} outputs a sample, float32; "
          f"the 10N set's outputs alone are {outputs_mib:.0f} MiB")
    print(f"{'run':<20} {'samples':>8} {'peak - imports':>15}")
    for label, valid, result in rows:
        print(f"{label:<20} {valid:>8} {result['growth_mib']:>15.1f}")
    by = {label: result["growth_mib"] for label, _, result in rows}
    print(f"A/A noise (whole, N twice): {abs(by['whole, N (A)'] - by['whole, N (A again)']):.1f} MiB")
    print(f"growth N -> 10N: whole {by['whole, 10N'] - by['whole, N (A)']:+.1f} MiB, "
          f"streaming {by['streaming, 10N'] - by['streaming, N']:+.1f} MiB")


if __name__ == "__main__":
    main()
