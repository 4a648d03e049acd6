"""``python -m iflearner.images`` (also ``iflearner-operator images``):

- ``build [NAME...]``: build (or find cached) the project's images and print their references;
  ``make setup`` runs it so that the slow part (debootstrap) happens before any test.
- ``push REGISTRY[/PREFIX] [NAME...]``: build (or find) the images a cluster runs and copy them to a
  registry, printing each one's reference by digest and the stack config that names them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from iflearner.images import project_images

# The images an installation pulls, and the bootstrap setting that names each (the workload is
# the federated-learning jobs' own image: their manifests name it).
INSTALLED = {"iflearner-operator": "iflearner:operatorImage", "traefik": "iflearner:gatewayImage",
             "iflearner-workload": None}


def _progress(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="images_command", required=True)
    build = commands.add_parser("build", help="build (or find cached) the project's images")
    build.add_argument("names", nargs="*", help="images to build (default: all)")
    push = commands.add_parser("push", help="copy the images a cluster runs to a registry (skopeo)")
    push.add_argument("registry", help="host[:port][/prefix], e.g. registry.example.com/ml-platform")
    push.add_argument("names", nargs="*", default=[],
                      help=f"images to push, of {', '.join(INSTALLED)} (default: all of them)")
    push.add_argument("--cert-dir", type=Path, default=None,
                      help="directory of CA certificates (*.crt) the registry's certificate chains to")
    push.add_argument("--no-tls-verify", dest="tls_verify", action="store_false",
                      help="plain HTTP or an unverified certificate (a registry on a trusted network only)")


def _built(names: list[str]) -> dict:
    from iflearner import toolchain
    from iflearner.images import ImageBuilder, project_spec
    from iflearner.images.gateway_images import traefik

    builder = ImageBuilder(progress=_progress)
    return {name: builder.build(traefik(toolchain.tool("traefik")) if name == "traefik"
                                else project_spec(name, builder)) for name in names}


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if args.images_command == "build":
        images = project_images(progress=_progress, names=args.names or None)
        for name, image in images.items():
            print(f"{name}\t{image.reference}\t{image.archive}")
        _progress(f"ready in {time.monotonic() - started:.1f}s")
        return 0
    from iflearner.images.push import PushError, Registry, push

    unknown = [name for name in args.names if name not in INSTALLED]
    if unknown:
        print(f"error: no installed image named {', '.join(unknown)}; choose of {', '.join(INSTALLED)}",
              file=sys.stderr)
        return 2
    try:
        registry = Registry(args.registry, args.cert_dir, args.tls_verify)
        names = args.names or list(INSTALLED)
        pushed = {}
        for name, image in _built(names).items():
            pushed[name] = push(image, registry)
            _progress(f"pushed {name} as {pushed[name]}")
    except PushError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, reference in pushed.items():
        print(f"{name}\t{reference}")
    settings = [(INSTALLED[name], reference) for name, reference in pushed.items() if INSTALLED[name]]
    if settings:
        print("\n# the stack config of each cluster's bootstrap (scripts/pulumi, in its stack):")
        for key, reference in settings:
            print(f"scripts/pulumi config set {key} {reference}")
    if "iflearner-workload" in pushed:
        print(f"# and in the jobs' manifests: image: {pushed['iflearner-workload']}")
    _progress(f"done in {time.monotonic() - started:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iflearner.images")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
