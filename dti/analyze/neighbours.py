"""`neighbours` (Tables 1 and 5): the vocabulary tokens nearest to a word, or to a learned embedding, by cosine
similarity and by Euclidean distance, side by side. Cosine neighbours of a word are its semantic relatives;
Euclidean neighbours are dominated by norm (rare tokens of similar norm), which is why the paper argues that
direction, not magnitude, carries meaning."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from dti.analyze.anatomy import token_names, vocabulary, word_rows
from dti.analyze.context import Context, paper_section2
from dti.analyze.outputs import md_table


def nearest(vocab: torch.Tensor, query: torch.Tensor, k: int, exclude: list[int] = ()) -> dict:
    """Top-k vocabulary ids by cosine (largest first) and by Euclidean distance (smallest first)."""
    query = query.to(vocab.device, vocab.dtype)
    cosine = torch.nn.functional.normalize(vocab, dim=-1) @ torch.nn.functional.normalize(query, dim=0)
    distance = (vocab - query).norm(dim=-1)
    if exclude:
        index = torch.tensor(list(exclude), device=vocab.device)
        cosine[index], distance[index] = -float("inf"), float("inf")
    cos_values, cos_ids = cosine.topk(k)
    dist_values, dist_ids = (-distance).topk(k)
    return {"cosine_ids": cos_ids.tolist(), "cosine": cos_values.tolist(), "euclidean_ids": dist_ids.tolist(),
            "distance": (-dist_values).tolist()}


def queries(ctx: Context, slot, runs) -> list[tuple[str, torch.Tensor, list[int]]]:
    """(label, row, ids to leave out) for each token of each query word and each row of each run."""
    found = []
    for word in ctx.settings.query:
        ids, rows = word_rows(slot, word)
        names = token_names(slot, ids)
        for i, row in zip(ids, rows):
            found.append((word if len(ids) == 1 else f"{word} [{names[ids.index(i)]}]", row, ids))
    for run in runs:
        for j, row in enumerate(run.rows[slot.key]):
            found.append((run.label if run.num_vectors == 1 else f"{run.label} [{j}]", row, []))
    return found


def run(ctx: Context) -> dict:
    runs, k = ctx.runs(), ctx.settings.top_k
    paper = {entry["query"]: entry for entry in paper_section2()["nearest_tokens"]}
    results, rows, lines = [], [], []
    for slot in ctx.backbone.encoders:
        vocab = vocabulary(slot)
        for label, row, exclude in queries(ctx, slot, runs):
            found = nearest(vocab, row, k, exclude)
            found.update(query=label, encoder=slot.key, norm=float(row.norm()),
                         cosine_tokens=token_names(slot, found["cosine_ids"]),
                         euclidean_tokens=token_names(slot, found["euclidean_ids"]))
            results.append(found)
            for rank in range(k):
                rows.append({"query": label, "encoder": slot.key, "rank": rank + 1,
                             "cosine_token": found["cosine_tokens"][rank], "cosine": found["cosine"][rank],
                             "euclidean_token": found["euclidean_tokens"][rank],
                             "distance": found["distance"][rank]})
            lines += [f"## {label} ({slot.key}, ‖e‖ = {found['norm']:.4g})", ""]
            lines += md_table(["rank", "cosine", "sim", "euclidean", "dist"],
                              [[r + 1, found["cosine_tokens"][r], found["cosine"][r], found["euclidean_tokens"][r],
                                found["distance"][r]] for r in range(k)])
            if label in paper and slot.key == "clip_l":
                lines += ["", f"Paper (CLIP-L): cosine {', '.join(paper[label]['cosine'])}; euclidean "
                          f"{', '.join(paper[label]['euclidean'])}"]
            lines.append("")
    ctx.out.figure(_figure(results, k, ctx.model), "neighbours.png")
    ctx.out.csv(rows, "neighbours.csv")
    ctx.out.json({"model": ctx.model, "top_k": k, "queries": results}, "neighbours.json")
    ctx.out.summary(f"Nearest vocabulary tokens: {ctx.model}", lines)
    return ctx.out.result(queries=results)


def _figure(results: list[dict], k: int, model: str):
    fig, axes = plt.subplots(len(results), 2, figsize=(9, 0.28 * k * len(results) + 0.8 * len(results)), dpi=110,
                             squeeze=False)
    for (left, right), found in zip(axes, results):
        ys = list(range(k))[::-1]
        left.barh(ys, found["cosine"], color="tab:blue")
        left.set_yticks(ys, found["cosine_tokens"], fontsize=7)
        left.set_title(f"{found['query']} ({found['encoder']}): cosine", fontsize=8)
        right.barh(ys, found["distance"], color="tab:orange")
        right.set_yticks(ys, found["euclidean_tokens"], fontsize=7)
        right.set_title(f"{found['query']} ({found['encoder']}): Euclidean distance", fontsize=8)
    fig.suptitle(f"{model}: nearest vocabulary tokens", fontsize=9)
    return fig
