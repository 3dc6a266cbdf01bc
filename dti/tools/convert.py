"""Convert an embedding between the layouts other tools read (dti.method.formats.layouts).

    python -m dti.convert IN OUT --to FORMAT --model MODEL [--token TOKEN]

IN: any embedding file (the layout is told from its contents), an `embeddings/` folder or a run directory. MODEL:
a conf/model name (sdxl, sd15, sd21_base, sana_1.6b, wan_1.3b, tiny_sdxl, ...): the rows are checked against its
text encoders' widths, read from configs, never from weights. OUT: a folder for `--to diffusers` (one file per
encoder), otherwise the file to write. Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dti.core.errors import InputError
from dti.method.formats import read_embedding
from dti.method.formats.writing import WRITTEN_LAYOUTS, write_embedding

SUFFIX = {"a1111_pt": ".pt"}  # the others: .safetensors (diffusers: a folder)


def convert(source: Path, out: Path, layout: str, model: str, token: str | None = None) -> list[Path]:
    """Read `source`, check it against `model`'s encoders, write it to `out` in `layout`; returns the files."""
    from dti.run.build import embedding_encoders
    from dti.run.conftree import compose, conf_dir

    models = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))
    if model not in models:
        raise InputError("--model", model, f"choose from {', '.join(models)}")
    if layout not in WRITTEN_LAYOUTS:
        raise InputError("--to", layout, f"choose from {', '.join(WRITTEN_LAYOUTS)}")
    wanted = SUFFIX.get(layout, ".safetensors")
    if layout != "diffusers" and out.suffix != wanted:
        raise InputError("OUT", str(out), f"a {layout} file ends in {wanted}")
    encoders = embedding_encoders(compose([f"model={model}"]))
    read = read_embedding(source, encoders)
    token = token or read.token or f"<{out.stem}>"
    try:
        return write_embedding(out, layout, read.rows, token, encoders, read.metadata)
    except ValueError as err:
        raise InputError("--to", layout, f"cannot hold {source}'s rows for {model} ({err})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dti.convert", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, metavar="IN")
    parser.add_argument("out", type=Path, metavar="OUT")
    parser.add_argument("--to", required=True, help=f"one of {', '.join(WRITTEN_LAYOUTS)}")
    parser.add_argument("--model", required=True, help="a conf/model name, e.g. sdxl, sd15, sana_1.6b, wan_1.3b")
    parser.add_argument("--token", help="the token diffusers adds (default: the file's own, else <OUT's name>)")
    args = parser.parse_args(argv)
    try:
        files = convert(args.source, args.out, args.to, args.model, args.token)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for file in files:
        print(file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
