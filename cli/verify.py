"""`impress verify FILE`: check a result's signed manifest (C2PA: the signature, and the hard binding
of manifest and pixels) and print it. Exit 0 when it holds, 1 when the file was changed after signing
or carries no manifest. `--trust CA.pem` also checks that the signer chains to that anchor; without
it a signature by an unknown certificate (the service's development one included) is reported as
untrusted but still valid."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import CommandFailed


def add_parser(sub) -> None:
    verify = sub.add_parser("verify", help="check a result PNG's signed manifest and print it",
                            description=__doc__)
    verify.add_argument("file", help="a result PNG (GET /v1/jobs/{id}/results/{i}, or impress purify's output)")
    verify.add_argument("--trust", metavar="PEM", help="trust anchors: PEM certificate(s) the signer must chain to")
    verify.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from impress.manifest import read_manifest

    try:
        data = Path(args.file).read_bytes()
        trust = Path(args.trust).read_text() if args.trust else None
    except OSError as exc:
        raise CommandFailed(f"{exc.filename}: {exc.strerror}") from exc
    checked = read_manifest(data, trust)
    if checked.manifest is not None:
        print(json.dumps(checked.manifest.model_dump(mode="json"), indent=2))
    signer = checked.manifest.signature if checked.manifest else None
    who = f"{signer.common_name} ({'DEVELOPMENT certificate' if signer.development else signer.issuer})" if signer else "?"
    if not checked.valid:
        raise CommandFailed(f"{args.file}: NOT valid: {', '.join(checked.status) or 'no IMPRESS manifest'}", 1)
    print(f"{args.file}: valid manifest signed by {who}; "
          + ("trusted" if checked.trusted else "signer not trusted (no --trust anchor it chains to)"))
    return 0
