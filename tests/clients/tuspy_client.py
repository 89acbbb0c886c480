#!/usr/bin/env python3
"""Drives the stock tuspy client (PyPI `tuspy`) for tests/tus_clients.rs.

  tuspy_client.py upload FILE TOKEN SERVERS [--checksum|--wrong-checksum] [--type T]
  tuspy_client.py resume FILE TOKEN SERVERS URL [--checksum]

SERVERS is one base URL or several, comma-separated: each chunk goes to the next one in
turn, as behind a load balancer. Chunks of 1 MiB; `--checksum` sends tuspy's
`Upload-Checksum` (sha1, or sha256 with `--sha256`) with each, `--wrong-checksum` a
sha256 of other bytes. Prints
`URL <upload url>`, `CHUNK <offset>` after each chunk, `DONE <upload url>`; on failure
`FAILED <status> <message>` and exit 1.
"""
import argparse
import hashlib
import sys
from urllib.parse import urlsplit, urlunsplit

from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError
from tusclient.uploader import Uploader

parser = argparse.ArgumentParser()
parser.add_argument("mode", choices=["upload", "resume"])
parser.add_argument("file")
parser.add_argument("token")
parser.add_argument("servers")
parser.add_argument("url", nargs="?")
parser.add_argument("--checksum", action="store_true")
parser.add_argument("--sha256", action="store_true")
parser.add_argument("--wrong-checksum", action="store_true")
parser.add_argument("--type", default="application/octet-stream")
args = parser.parse_args()
bases = args.servers.split(",")


class Sha256(Uploader):
    """tuspy's uploader with SHA-256 checksums (tuspy's own default is SHA-1)."""

    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


class WrongChecksum(Uploader):
    """An uploader whose Upload-Checksum is the SHA-256 of other bytes."""

    CHECKSUM_ALGORITHM_PAIR = ("sha256", lambda chunk: hashlib.sha256(chunk + b"!"))


def on(base, url):
    """`url` with the host of `base`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=urlsplit(base).netloc))


client = tus_client.TusClient(bases[0] + "/files", headers={"Authorization": "Bearer " + args.token})
kind = WrongChecksum if args.wrong_checksum else Sha256 if args.sha256 else Uploader
try:
    uploader = kind(
        file_path=args.file,
        client=client,
        url=args.url if args.mode == "resume" else None,
        chunk_size=1024 * 1024,
        metadata={"filename": args.file.rsplit("/", 1)[-1], "filetype": args.type},
        upload_checksum=args.checksum or args.sha256 or args.wrong_checksum,
    )
    turn = 0
    while uploader.offset < uploader.get_file_size():
        if uploader.url is not None:
            uploader.url = on(bases[turn % len(bases)], uploader.url)
        turn += 1
        uploader.upload_chunk()
        if turn == 1:
            print("URL " + uploader.url, flush=True)
        print("CHUNK %d" % uploader.offset, flush=True)
    print("DONE " + uploader.url, flush=True)
except TusCommunicationError as e:
    print("FAILED %s %s" % (e.status_code or 0, str(e).splitlines()[0] if str(e) else ""), flush=True)
    sys.exit(1)
