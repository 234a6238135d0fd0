"""Command `directions` of the `stylegan` command (see gan/cli.py): find a network's editing directions
(gan/editing.py) and write them to an .npz that `generate --edit` and `video --edit/--sweep` read."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "directions",
        help="find editing directions (SeFa, GANSpace)",
        description="Find label-free editing directions in W and write them to an .npz: SeFa (closed-form, "
        "from the style weights of a layer range; under a second) or GANSpace (PCA of mapped w). Print each "
        "direction's id, then use it as --edit ID:STRENGTH with generate or video.",
    )
    p.add_argument("--network", required=True, help="official .pkl, TensorFlow .pkl or our .safetensors")
    p.add_argument("--method", choices=("sefa", "ganspace"), default="sefa")
    p.add_argument(
        "--layers", default="all", help="SeFa: the ws range to factorise: coarse, middle, fine, all or a-b"
    )
    p.add_argument("--k", type=int, default=10, help="how many directions (default 10)")
    p.add_argument("--samples", type=int, default=100_000, help="GANSpace: mapped samples (default 100000)")
    p.add_argument("--seed", type=int, default=0, help="GANSpace: seed of the z stream (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", required=True, help="output .npz")
    p.set_defaults(handler=_directions)


def _directions(args: argparse.Namespace) -> int:
    import os

    from tqdm import tqdm

    from gan.editing import ganspace, save_directions, sefa
    from gan.errors import GanError
    from gan.io.checkpoint import load_network
    from gan.sampling import resolve_device
    from gan.vocabulary import check_seed

    if not args.out.endswith(".npz"):
        raise GanError(f"--out must be an .npz file, got {args.out!r}")
    if args.k < 1:
        raise GanError(f"--k must be >= 1, got {args.k}")
    if args.method == "ganspace":
        check_seed(args.seed)
        if args.samples < 2:
            raise GanError(f"--samples must be >= 2, got {args.samples}")
    device = resolve_device(args.device)
    G = load_network(args.network, device)
    if args.method == "sefa":
        found = sefa(G, args.layers, args.k)
    else:
        if args.layers != "all":
            raise GanError("--layers is for SeFa; GANSpace directions are found in w and apply to all ws")
        with tqdm(total=args.samples, desc="ganspace", unit="w", disable=None) as bar:
            found = ganspace(
                G,
                args.samples,
                args.k,
                seed=args.seed,
                progress=lambda done, _total: bar.update(done - bar.n),
            ).directions
    parent = os.path.dirname(args.out)
    if parent:
        os.makedirs(parent, exist_ok=True)
    save_directions(args.out, found)
    for d in found:
        measure = f"sigma {d.sigma:.4g}" if d.sigma is not None else f"eigenvalue {d.value:.4g}"
        print(f"{d.id}\t{measure}")
    return 0
