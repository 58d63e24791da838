"""A small conditional GAN of 64-px grey chest films, conditioned on the 14-finding label vector.

    python -m core.training.cgan --out var/runs/cgan-64 --iterations 3000 --seed 0
    python -m core.training.cgan --out var/runs/cgan-smoke --iterations 4 --limit 64    # smoke test

A research artefact for the synthetic-image ablation (``core.training.gan_ablation``), never served. The
recipe is the usual stable one for a few thousand images on a CPU: DCGAN-shaped generator and discriminator
of small widths, spectral norm in the discriminator, a projection discriminator for the (multi-hot) condition
(Miyato & Koyama 2018), hinge loss, Adam(0, 0.9) with a faster discriminator (TTUR), and DiffAugment-style
differentiable translation and cutout on every image the discriminator sees (Zhao et al. 2020), because
~2,300 training films are far too few for a GAN otherwise. No flips: a chest film is not left-right symmetric.

Trains on the train split only. Prints one line per ``--log-every`` iterations (losses, seconds) and writes
``generator.pt`` (fp16 state dict, loadable with ``torch.load(..., weights_only=True)``), ``samples.png`` and
``train.json`` to ``--out`` every ``--save-every`` iterations and at the end. ``--publish`` copies a run's
generator and samples into ``models/gan/<version>/`` with ``card.json`` and ``MODEL_CARD.md``; the model
registry's kinds (classifier, detector) never look there: the GAN is not served.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from core.config import get_settings
from core.training.nih14 import FINDINGS, dataset_hash, load_splits

log = logging.getLogger("cgan")

SIZE = 64
N_FINDINGS = len(FINDINGS)


# ------------------------------------------------------------------------------------------ networks


class Generator(nn.Module):
    """(noise z, multi-hot labels y) -> grey image in [-1, 1], (N, 1, 64, 64).

    The label vector enters twice: concatenated to the noise, and as a per-block channel bias, so a finding
    can change the film at every scale, not only through the first layer.
    """

    def __init__(self, z_dim: int = 64, width: int = 32, n_findings: int = N_FINDINGS):
        super().__init__()
        self.z_dim, self.width, self.n_findings = z_dim, width, n_findings
        chans = [width * 8, width * 4, width * 2, width, width // 2]  # 4, 8, 16, 32, 64 px
        self.fc = nn.Linear(z_dim + n_findings, chans[0] * 16)
        self.bn0 = nn.BatchNorm2d(chans[0])
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False) for a, b in zip(chans, chans[1:], strict=False)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(b) for b in chans[1:])
        self.cond = nn.ModuleList(nn.Linear(n_findings, b) for b in chans[1:])
        self.out = nn.Conv2d(chans[-1], 1, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, y], dim=1)).view(len(z), -1, 4, 4)
        h = F.relu(self.bn0(h))
        for up, bn, cond in zip(self.ups, self.bns, self.cond, strict=True):
            h = F.relu(bn(up(h)) + cond(y)[:, :, None, None])
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    """Spectrally normalised DCGAN discriminator with a projection head for the multi-hot condition:
    score = w . h + sum_k y_k (e_k . h), so every present finding pulls the features towards its embedding."""

    def __init__(self, width: int = 32, n_findings: int = N_FINDINGS):
        super().__init__()
        chans = [1, width // 2, width, width * 2, width * 4, width * 8]  # 64 -> 32 -> 16 -> 8 -> 4 -> 2 px
        self.convs = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, 4, 2, 1)) for a, b in zip(chans, chans[1:], strict=False)
        )
        self.linear = spectral_norm(nn.Linear(chans[-1], 1))
        self.embed = spectral_norm(nn.Linear(n_findings, chans[-1], bias=False))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        h = h.sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)


# ------------------------------------------------------------------------------------------ augmentation


def diff_augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """DiffAugment's translation (up to 1/8 of the side, zero padded) and cutout (a 1/2-side square of zeros).

    Both are differentiable in the image, so the generator learns through them; the discriminator never sees
    an unaugmented film, which is what keeps it from memorising ~2,300 of them.
    """
    n, _, h, w = x.shape
    shift = h // 8
    tx = torch.randint(-shift, shift + 1, (n, 1, 1), generator=generator)
    ty = torch.randint(-shift, shift + 1, (n, 1, 1), generator=generator)
    gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    src_y = (gy[None] + ty + 1).clamp(0, h + 1)
    src_x = (gx[None] + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1))  # the border of zeros that translated-in pixels read
    x = padded[torch.arange(n)[:, None, None], 0, src_y, src_x].unsqueeze(1)
    # cutout
    half = h // 4
    cy = torch.randint(0, h + (1 - h % 2), (n, 1, 1), generator=generator)
    cx = torch.randint(0, w + (1 - w % 2), (n, 1, 1), generator=generator)
    inside = ((gy[None] - cy).abs() < half) & ((gx[None] - cx).abs() < half)
    return x * (~inside).unsqueeze(1).to(x.dtype)


# ------------------------------------------------------------------------------------------ using a generator


def positive_rows(labels: np.ndarray, finding: int, n: int, seed: int) -> np.ndarray:
    """``n`` row indices drawn with replacement from the rows of ``labels`` positive for ``finding``."""
    rows = np.where(labels[:, finding] > 0)[0]
    if len(rows) == 0:
        raise ValueError(f"no row is positive for {FINDINGS[finding]}")
    return np.random.default_rng(seed).choice(rows, size=n, replace=True)


def condition_vectors(labels: np.ndarray, finding: int | None, n: int, seed: int) -> np.ndarray:
    """``n`` label vectors of train rows positive for ``finding`` (:func:`positive_rows`), so co-occurring
    findings come in their real proportions; ``finding=None`` means No Finding (all zeros)."""
    if finding is None:
        return np.zeros((n, labels.shape[1]), np.float32)
    return labels[positive_rows(labels, finding, n, seed)].astype(np.float32)


@torch.no_grad()
def generate(generator: Generator, labels: np.ndarray, seed: int, batch: int = 256) -> np.ndarray:
    """uint8 grey films (N, 64, 64) for the label vectors ``labels`` (N, 14); the same seed, the same films."""
    generator.eval()
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(len(labels), generator.z_dim, generator=rng)
    y = torch.as_tensor(labels, dtype=torch.float32)
    out = [generator(z[i : i + batch], y[i : i + batch]) for i in range(0, len(labels), batch)]
    x = torch.cat(out) if out else torch.zeros(0, 1, SIZE, SIZE)
    return ((x[:, 0].numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)


def save_generator(generator: Generator, path: Path) -> None:
    """fp16 floating tensors (integers such as BatchNorm's counter kept) plus the shape, tensors only."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in generator.state_dict().items()} | {
        "_shape": torch.tensor([generator.z_dim, generator.width, generator.n_findings])
    }
    torch.save(state, path)


def load_generator(path: Path) -> Generator:
    """The generator saved by :func:`save_generator`; ``weights_only=True`` never unpickles code."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    z_dim, width, n_findings = (int(v) for v in state.pop("_shape"))
    generator = Generator(z_dim, width, n_findings)
    generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return generator.eval()


def sample_grid(generator: Generator, labels: np.ndarray, rows: list[int | None], per_row: int, seed: int):
    """A PIL image: one row per finding index (None = No Finding), ``per_row`` films, the name on the left."""
    margin = 110
    grid = Image.new("L", (margin + per_row * SIZE, len(rows) * SIZE), 0)
    draw = ImageDraw.Draw(grid)
    for r, finding in enumerate(rows):
        films = generate(generator, condition_vectors(labels, finding, per_row, seed + r), seed + r)
        for c, film in enumerate(films):
            grid.paste(Image.fromarray(film), (margin + c * SIZE, r * SIZE))
        draw.text((4, r * SIZE + SIZE // 2 - 6), "No Finding" if finding is None else FINDINGS[finding], 255)
    return grid


def rarest(labels: np.ndarray, n: int) -> list[int]:
    """Indices of the ``n`` findings with the fewest (but some) positives in ``labels`` (ties: FINDINGS order)."""
    present = [k for k in range(labels.shape[1]) if labels[:, k].sum() > 0]
    return sorted(present, key=lambda k: (labels[:, k].sum(), k))[:n]


# ------------------------------------------------------------------------------------------ training


def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np_rng = np.random.default_rng(args.seed)
    aug_rng = torch.Generator().manual_seed(args.seed + 1)
    settings = get_settings()
    data_dir = Path(args.data_dir) if args.data_dir else settings.shared_data_dir
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = load_splits(data_dir, SIZE, cache_dir=settings.var_dir / "cache")["train"]
    images, labels = split.images, split.labels
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    real = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 127.5 - 1.0
    cond = torch.as_tensor(labels, dtype=torch.float32)
    g, d = Generator(args.z_dim, args.width), Discriminator(args.width)
    g_ema = copy.deepcopy(g).eval()  # the published generator: a running average of g's weights
    opt_g = torch.optim.Adam(g.parameters(), lr=args.lr_g, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=args.lr_d, betas=(0.0, 0.9))
    n_params = sum(p.numel() for p in g.parameters())
    print(f"train {len(real)} films at {SIZE} px; generator {n_params:,} parameters", flush=True)
    rows = [*rarest(split.labels, 5), None]
    history: list[dict] = []
    t0 = time.perf_counter()

    def checkpoint(iteration: int) -> dict:
        save_generator(g_ema, out / "generator.pt")
        sample_grid(g_ema, split.labels, rows, 8, seed=0).save(out / "samples.png")
        record = {
            "recipe": recipe(args),
            "iterations": iteration,
            "planned_iterations": args.iterations,
            "train_images": len(real),
            "seconds": time.perf_counter() - t0,
            "threads": args.threads,
            "history": history,
            "findings": list(FINDINGS),
            "data_sha256": None if args.limit else dataset_hash(data_dir),
            "command": "python -m core.training.cgan " + " ".join(args.argv),
        }
        (out / "train.json").write_text(json.dumps(record, indent=2))
        return record

    record: dict = {}
    for it in range(1, args.iterations + 1):
        idx = torch.as_tensor(np_rng.integers(0, len(real), args.batch))
        x, y = real[idx], cond[idx]
        # Discriminator: hinge loss on augmented real and fake films of the same label vectors.
        with torch.no_grad():
            fake = g(torch.randn(args.batch, args.z_dim), y)
        loss_d = (
            F.relu(1.0 - d(diff_augment(x, aug_rng), y)).mean()
            + F.relu(1.0 + d(diff_augment(fake, aug_rng), y)).mean()
        )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # Generator: conditioned on real label vectors, so co-occurrences stay realistic.
        y_g = cond[torch.as_tensor(np_rng.integers(0, len(real), args.batch))]
        loss_g = -d(diff_augment(g(torch.randn(args.batch, args.z_dim), y_g), aug_rng), y_g).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        update_average(g_ema, g, args.ema)
        if it % args.log_every == 0 or it == args.iterations:
            row = {
                "iteration": it,
                "loss_d": loss_d.item(),
                "loss_g": loss_g.item(),
                "seconds": time.perf_counter() - t0,
            }
            history.append(row)
            print(
                f"iteration {it}/{args.iterations} loss D {row['loss_d']:.3f} G {row['loss_g']:.3f} "
                f"({row['seconds']:.0f} s)",
                flush=True,
            )
        if it % args.save_every == 0 or it == args.iterations:
            record = checkpoint(it)
    print(f"saved {out / 'generator.pt'} after {time.perf_counter() - t0:.0f} s", flush=True)
    return record


@torch.no_grad()
def update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    """Exponential moving average of the weights (BatchNorm statistics copied): a GAN's running average
    samples visibly cleaner films than its last iterate, at no training cost."""
    for a, p in zip(average.parameters(), model.parameters(), strict=True):
        a.lerp_(p, 1.0 - decay)
    for kept, current in zip(average.buffers(), model.buffers(), strict=True):
        kept.copy_(current)


def recipe(args: argparse.Namespace) -> dict:
    return {
        "architecture": "DCGAN-shaped conditional generator (label vector concatenated to z and added per "
        "block); spectral-norm discriminator with a projection head",
        "size": SIZE,
        "z_dim": args.z_dim,
        "width": args.width,
        "batch": args.batch,
        "loss": "hinge",
        "optimizer": f"Adam(betas=(0, 0.9)), lr G {args.lr_g}, lr D {args.lr_d}, one D step per G step",
        "augmentation": "DiffAugment translation 1/8 + cutout 1/2, on real and fake (no flips)",
        "ema_decay": args.ema,
        "seed": args.seed,
        "split": "train",
    }


# ------------------------------------------------------------------------------------------ publishing

NIH_ATTRIBUTION = (
    "NIH ChestX-ray14 (https://nihcc.app.box.com/v/ChestXray-NIHCC). Wang X, Peng Y, Lu L, Lu Z, Bagheri M, "
    "Summers RM. ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised "
    "Classification and Localization of Common Thorax Diseases. IEEE CVPR 2017, pp. 3462-3471. The images "
    "are provided by the NIH Clinical Center."
)


def publish(run: Path, folder: Path) -> Path:
    """Copy a run's generator and sample grid into ``folder`` and write its card.json and MODEL_CARD.md."""
    record = json.loads((run / "train.json").read_text())
    if record.get("data_sha256") is None:
        raise SystemExit(f"{run} was trained on a --limit subset; not publishing it")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("generator.pt", "samples.png"):
        shutil.copyfile(run / name, folder / name)
    card = {
        "kind": "gan",
        "version": folder.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "served": False,
        "purpose": "research artefact: the synthetic-image ablation (core.training.gan_ablation)",
        "files": {"generator": "generator.pt", "samples": "samples.png"},
        "weights_format": "torch.save of an fp16 state dict of tensors (load with weights_only=True); "
        "core.training.cgan.load_generator",
        "input": {"condition": "multi-hot vector of the findings, in this order", "z": "standard normal"},
        "output": {"size": SIZE, "channels": 1, "range": "[-1, 1]; generate() returns uint8 0-255"},
        "findings": record["findings"],
        "recipe": record["recipe"],
        "iterations": record["iterations"],
        "planned_iterations": record.get("planned_iterations"),
        "train_images": record["train_images"],
        "train_minutes": round(record["seconds"] / 60, 1),
        "threads": record["threads"],
        "data": {"split": "train", "data_sha256": record["data_sha256"], "source": NIH_ATTRIBUTION},
        "command": record["command"],
        "publish_command": f"python -m core.training.cgan --out {run} --publish {folder.name}",
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (folder / "MODEL_CARD.md").write_text(model_card_markdown(card))
    print(f"published {folder}", flush=True)
    return folder


def model_card_markdown(card: dict) -> str:
    r = card["recipe"]
    return f"""# Model card: conditional chest-film GAN `{card["version"]}` (research artefact, not served)

Generates 64 x 64 grey frontal chest films conditioned on a multi-hot vector of the 14 ChestX-ray14 findings.
It exists to test one claim: that adding GAN-synthesised films of rare findings to training lifts the
classifier's AUC on them. **It is not a medical device, is never served by the dashboard, and its films must
never be shown as, or mixed with, real patient images.** The model registry (classifier, detector) does not
read `models/gan/`.

## Model
- {r["architecture"]}; generator {card["output"]["size"]} px, z {r["z_dim"]}-d, width {r["width"]}.
- Loss {r["loss"]}; {r["optimizer"]}; batch {r["batch"]}; {r["augmentation"]}; published weights: exponential
  moving average (decay {r["ema_decay"]}) of the generator's.
- Weights: `generator.pt`, {card["weights_format"]}.

## Data
- Images: {card["data"]["source"]}
- Train split only ({card["train_images"]:,} films at 64 px, patient-disjoint from validation and test).
  Data hash (sha256 over labels.csv and every image): `{card["data"]["data_sha256"]}`.
- This is tiny by a GAN's standards (PGGAN-style chest X-ray work used tens of thousands of films); several
  findings have fewer than 100 training films, Hernia 20.

## Training
- {card["iterations"]:,} iterations, {card["train_minutes"]} min on {card["threads"]} CPU thread(s) of a shared
  2-core machine, seed {r["seed"]}.
- Reproduce: `{card["command"]}`, then `{card["publish_command"]}`.

## Samples
Rows: the five findings with the fewest train positives, then No Finding; each film conditioned on the label
vector of a train row positive for that finding (so co-occurring findings are real ones), seed 0.

![samples](samples.png)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--z-dim", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--lr-g", type=float, default=1e-4)
    p.add_argument("--lr-d", type=float, default=4e-4)
    p.add_argument("--ema", type=float, default=0.999, help="decay of the published weights' average")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--limit", type=int, default=0, help="use only the first N train films (smoke tests)")
    p.add_argument("--data-dir", default=None, help="folder holding nih14/ (default: settings)")
    p.add_argument("--publish", metavar="VERSION", help="publish the run in --out as models/gan/VERSION")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    return args


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = parse_args(argv)
    if args.publish:
        publish(Path(args.out), get_settings().models_dir / "gan" / args.publish)
    else:
        train(args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
