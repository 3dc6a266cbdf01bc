"""`probe` (Figure 2): can the first block still tell where a token is? A 2-layer MLP is trained on the frozen
encoder to predict a token's absolute position from the first pre-norm LayerNorm's output LN(e + p) (random
vocabulary tokens at random positions), then evaluated with the token's embedding scaled by m, with the absolute
norm set to s at position 0 (the official notebook's variant), and with the runs' learned embeddings. A large
‖e‖ drowns the position p inside the LayerNorm: TI's embeddings lose their position, DTI's keep it.

Encoders without learned absolute positions (Gemma, T5: rotary or relative) are refused, not faked."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from torch import nn

from dti.analyze.anatomy import first_norm, layer_norm, position_table, vocabulary
from dti.analyze.context import Context, paper_section2
from dti.analyze.outputs import md_table
from dti.analyze.settings import ProbeSettings
from dti.core.errors import InputError

CHUNK = 8192  # probe inputs evaluated at once


@dataclass
class ProbeParts:
    """What the probe reads of one encoder, fp32 on the encoder's device."""

    positions: torch.Tensor  # [n_positions, d]
    norm: nn.LayerNorm
    vocab: torch.Tensor  # [rows, d]
    candidates: torch.Tensor  # vocabulary ids the probe draws (special tokens left out)

    def features(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """LN(e + p) for token rows [N, d] at positions [N]."""
        return layer_norm(self.norm, tokens + self.positions[positions])


def probe_parts(slot) -> ProbeParts | None:
    """The encoder's position table and first LayerNorm, or None where it has no learned absolute positions."""
    table, norm = position_table(slot), first_norm(slot)
    if table is None or norm is None:
        return None
    vocab = vocabulary(slot, table.weight.device)  # the probe trains where the encoder is (a GPU for real models)
    special = set(getattr(slot.tokenizer, "all_special_ids", None) or [])
    candidates = torch.tensor([i for i in range(vocab.shape[0]) if i not in special], device=vocab.device)
    return ProbeParts(table.weight.detach().float(), norm, vocab, candidates)


class PositionMLP(nn.Module):
    def __init__(self, width: int, hidden: int, positions: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, positions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def train_probe(parts: ProbeParts, settings: ProbeSettings, seed: int) -> PositionMLP:
    """The MLP fitted on unscaled vocabulary tokens at uniformly drawn positions (cross-entropy, Adam)."""
    generator = torch.Generator().manual_seed(seed)
    device = parts.vocab.device
    torch.manual_seed(seed)  # the MLP's initial weights
    mlp = PositionMLP(parts.vocab.shape[1], settings.hidden, parts.positions.shape[0]).to(device)
    optimizer = torch.optim.Adam(mlp.parameters(), lr=settings.lr)
    for _ in range(settings.steps):
        ids = parts.candidates[torch.randint(len(parts.candidates), (settings.batch_size,), generator=generator)
                               .to(device)]
        where = torch.randint(parts.positions.shape[0], (settings.batch_size,), generator=generator).to(device)
        loss = nn.functional.cross_entropy(mlp(parts.features(parts.vocab[ids], where)), where)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return mlp.eval()


@torch.no_grad()
def accuracy(mlp: PositionMLP, parts: ProbeParts, tokens: torch.Tensor, positions: list[int] | None = None) -> float:
    """How often the position is recovered for each token row at each of `positions` (None: all)."""
    where = torch.arange(parts.positions.shape[0]) if positions is None else torch.tensor(positions)
    where = where.to(parts.vocab.device)
    rows = tokens.to(parts.vocab.device).float()
    grid_tokens = rows.repeat_interleave(len(where), dim=0)
    grid_positions = where.repeat(rows.shape[0])
    hits = 0
    for start in range(0, len(grid_positions), CHUNK):  # bounded memory: 512 tokens x 77 positions x 1280 wide
        chunk = slice(start, start + CHUNK)
        predicted = mlp(parts.features(grid_tokens[chunk], grid_positions[chunk])).argmax(-1)
        hits += int((predicted == grid_positions[chunk]).sum())
    return hits / len(grid_positions)


def evaluation_tokens(parts: ProbeParts, count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 1)  # other draws than training's
    pick = torch.randperm(len(parts.candidates), generator=generator)[:count].to(parts.vocab.device)
    return parts.vocab[parts.candidates[pick]]


def probe_encoder(parts: ProbeParts, settings: ProbeSettings, seed: int, runs, key: str) -> dict:
    """Every accuracy of one encoder: by scale m (all positions), by absolute norm s (position 0), per run."""
    mlp = train_probe(parts, settings, seed)
    tokens = evaluation_tokens(parts, settings.eval_tokens, seed)
    unit = torch.nn.functional.normalize(tokens, dim=-1)
    mean = float(parts.vocab.norm(dim=-1).mean())
    return {
        "vocabulary_mean_norm": mean,
        "scaled": {str(m): accuracy(mlp, parts, m * tokens) for m in settings.scales},
        "official": {str(s): accuracy(mlp, parts, s * unit, [0]) for s in settings.norms},
        "runs": {r.label: {"norm": float(r.rows[key].norm(dim=-1).mean()),
                           "all_positions": accuracy(mlp, parts, r.rows[key]),
                           "position_0": accuracy(mlp, parts, r.rows[key], [0])} for r in runs},
    }


def run(ctx: Context) -> dict:
    parts = {slot.key: probe_parts(slot) for slot in ctx.backbone.encoders}
    skipped = [key for key, p in parts.items() if p is None]
    if len(skipped) == len(parts):
        raise InputError("model", ctx.model, f"its text encoder(s) {', '.join(skipped)} have no learned absolute "
                         "position embeddings (rotary or relative positions): the position probe needs an encoder "
                         "like CLIP's")
    runs, settings = ctx.runs(), ctx.settings.probe
    results = {key: probe_encoder(p, settings, int(ctx.cfg.seed), runs, key) for key, p in parts.items() if p}
    paper = paper_section2()["position_probe"]
    rows = [{"encoder": k, "variant": variant, "value": v, "accuracy": a} for k, r in results.items()
            for variant in ("scaled", "official") for v, a in r[variant].items()]
    rows += [{"encoder": k, "variant": "run", "value": label, "norm": x["norm"], "accuracy": x["all_positions"],
              "accuracy_position_0": x["position_0"]} for k, r in results.items() for label, x in r["runs"].items()]
    ctx.out.figure(_figure(results, paper, ctx.model), "probe.png")
    ctx.out.csv(rows, "probe.csv")
    record = {"model": ctx.model, "encoders": results, "skipped": skipped, "paper": paper}
    ctx.out.json(record, "probe.json")
    ctx.out.summary(f"Position probe: {ctx.model}", _summary(results, paper, skipped, settings))
    return ctx.out.result(**record)


def _summary(results: dict, paper: dict, skipped: list[str], settings: ProbeSettings) -> list[str]:
    lines = ["Accuracy of the position probe with e scaled by m (all positions; Figure 2):", ""]
    lines += md_table(["encoder", *(f"m={m:g}" for m in settings.scales)],
                      [[k, *r["scaled"].values()] for k, r in results.items()])
    lines += ["", "Official notebook's variant: ‖e‖ = s at position 0 (ours, then the notebook's):", ""]
    official = paper["official_notebook"]
    table = []
    for k, r in results.items():
        table.append([k, *r["official"].values()])
        if k in official and [float(s) for s in settings.norms] == [float(s) for s in official["norms"]]:
            table.append([f"{k} (official notebook)", *official[k]])
    lines += md_table(["encoder", *(f"s={s:g}" for s in settings.norms)], table)
    runs = [[label, k, x["norm"], x["all_positions"], x["position_0"]] for k, r in results.items()
            for label, x in r["runs"].items()]
    if runs:
        lines += ["", *md_table(["run", "encoder", "‖e‖", "accuracy (all positions)", "accuracy (position 0)"],
                                runs)]
    lines += ["", f"Paper: unscaled accuracy {paper['normal_accuracy']}; TI {paper['ti']}; DTI {paper['dti']}; "
              "official notebook: TI embeddings 0.0."]
    if skipped:
        lines.append(f"Not probed (no learned absolute positions): {', '.join(skipped)}.")
    return lines


def _figure(results: dict, paper: dict, model: str):
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), dpi=110, squeeze=False)
    for ax, (key, r) in zip(axes[0], results.items()):
        mean = r["vocabulary_mean_norm"]
        ax.plot([float(m) * mean for m in r["scaled"]], list(r["scaled"].values()), marker="o",
                label="e scaled by m (all positions)")
        ax.plot([float(s) for s in r["official"]], list(r["official"].values()), marker="s",
                label="‖e‖ = s at position 0")
        if key in paper["official_notebook"]:
            ax.plot(paper["official_notebook"]["norms"], paper["official_notebook"][key], marker="s",
                    markerfacecolor="none", linestyle=":", color="tab:orange", label="official notebook")
        for i, (label, x) in enumerate(r["runs"].items()):
            ax.scatter([x["norm"]], [x["all_positions"]], marker="*", s=120, color=plt.get_cmap("tab10")(i + 2),
                       label=f"{label} (‖e‖ {x['norm']:.3g})", zorder=3)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("‖e‖ of the probed token")
        ax.set_ylabel("position accuracy")
        ax.set_title(f"{model} {key}: position probe")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return fig
