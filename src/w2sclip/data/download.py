"""``w2sclip data download``: resumable, verified downloads (urllib only) and unpacking.

Every file goes to ``<file>.part`` first and is resumed with an HTTP ``Range`` request after an
interruption (rerun the same command). A finished file is checked against the server's length
and, where known, a SHA-512 prefix, then renamed; ``<file>.sha512`` records the check, so a
rerun skips it. Archives are unpacked once (``<archive>.unpacked`` marks it). Failures of one
file do not stop the others; at the end one ``DownloadError`` says which URL failed and what to
do (retry later, use ``--mirror``, or put the file at the printed path by hand and rerun).
"""

from __future__ import annotations

import hashlib
import logging
import time
import zipfile
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm.auto import tqdm

from w2sclip.data.domainnet import BASE_URL as DOMAINNET_URL

log = logging.getLogger(__name__)

DOMAINNET_ARCHIVES = {"clipart": "groundtruth/clipart.zip", "infograph": "infograph.zip",
                      "painting": "groundtruth/painting.zip", "quickdraw": "quickdraw.zip",
                      "real": "real.zip", "sketch": "sketch.zip"}
"""Paths under ``DOMAINNET_URL`` of the cleaned-version image archives (ai.bu.edu/M3SDA)."""

DOMAINNET_SHA512 = {
    "clipart.zip": "3bcfb9ec1b4061e8d5b0b887d4ebd4a708732787fc563c6dfc2d",
    "infograph.zip": "47841f0d1b8606e4b02d508b250484d54f5cf04ef6c4875c6c5a39c",
    "painting.zip": "4c98b02563075948668a298c488660fda1d1a7ed85fd69caa7985fba",
    "quickdraw.zip": "127cce1dd57fc99992f8614de77d03ae8ed6af242973f7a013ec0a",
    "real.zip": "751713d4592d1278b50bf69787988cfae280cabdac80ee34ec4016e",
    "sketch.zip": "369b8b6d78ac61bfcc85f660d878ba5fc701524b82bbc2eb65ca9a",
    "clipart_train.txt": "400985ce2a0878df2d8e54f1996c4fc253e577c1f91136304e553b",
    "clipart_test.txt": "4d34a4a540d8b139499581875e2d18bbedd37c347233523d66beaf",
    "infograph_train.txt": "d9ed4d86e2ea20b44315699964b6b7dc09442f0539300444d9329d",
    "infograph_test.txt": "700f2b5deaad3923b0b8b85aeb694b73f24b13255cf48db3e770eaf",
    "quickdraw_train.txt": "7410e8a1debd769e0412725a0fcc646d83055d297b5f44a92f50308",
    "quickdraw_test.txt": "07a97e84d723f58dea67683ae5ddf013ebc5d33b76deca9a5d34f72",
    "real_train.txt": "a5a510fec614018546510d55c378bca008fcfd51062f6414583639e",
    "real_test.txt": "9586235e335340f065de720f99332bc906aa0ab147006a1a7ea4925",
    "sketch_train.txt": "ee92102f2b98f11765e6a97afbab15c60f2bac6e30fa7e1bc5a7db",
    "sketch_test.txt": "7384fc06670979911d7e1e9a34ba8a6cd20e9e77d6bc3536c739ff4",
}
"""SHA-512 prefixes of the official files as published in kwcoco's ``grab_domainnet.py``
(painting's split files are not listed there, so only their length is checked)."""


class DownloadError(RuntimeError):
    """A download or unpack that failed; the message says which URL and what to do."""


@dataclass(frozen=True)
class Remote:
    """One file to fetch: ``url`` into ``root/dest``; unpacked into root when ``unpack``."""

    url: str
    dest: str
    sha512_prefix: str | None = None
    unpack: bool = False


def domainnet_remotes(domains, base_url: str = DOMAINNET_URL) -> list[Remote]:
    """The split files and image archive of each DomainNet domain (split files first)."""
    base = base_url.rstrip("/") + "/"
    out = []
    for d in domains:
        for s in ("train", "test"):
            f = f"{d}_{s}.txt"
            out.append(Remote(f"{base}domainnet/txt/{f}", f"splits/{f}", DOMAINNET_SHA512.get(f)))
        arc = DOMAINNET_ARCHIVES[d]
        name = arc.rsplit("/", 1)[-1]
        out.append(Remote(base + arc, f"downloads/{name}", DOMAINNET_SHA512.get(name), unpack=True))
    return out


def _hint(url: str, dest: Path) -> str:
    return (f"retry later (the command resumes), try --mirror URL, or download {url} by hand to "
            f"{dest} and rerun (it is then verified and unpacked)")


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": "w2sclip-download"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urlopen(Request(url, headers=headers), timeout=timeout)


def _stream(url: str, part: Path, timeout: float, progress: bool) -> int | None:
    """Append the rest of ``url`` to ``part``; returns the full length when the server says it."""
    start = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, start, timeout)
    except HTTPError as e:
        if e.code == 416 and start:  # nothing left to fetch: the part is complete (verified next)
            return start
        raise
    with resp:
        status = getattr(resp, "status", 200) or 200
        length = resp.headers.get("Content-Length")
        if start and status != 206:  # the server ignored Range: start over
            start = 0
        total = start + int(length) if length is not None else None
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=part.name,
                   disable=not progress, leave=False)
        with open(part, "ab" if start else "wb") as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
        bar.close()
    size = part.stat().st_size
    if total is not None and size < total:  # dropped connection: the caller retries and resumes
        raise ConnectionError(f"connection closed after {size} of {total} bytes")
    return total


def sha512_of(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, prefix: str | None, url: str, verify: bool) -> str:
    """SHA-512 of ``path``; a mismatch with ``prefix`` moves it aside and raises."""
    digest = sha512_of(path)
    if verify and prefix and not digest.startswith(prefix):
        bad = path.with_name(path.name + ".corrupt")
        path.replace(bad)
        raise DownloadError(f"{url}: checksum mismatch (sha512 {digest[:16]}..., expected "
                            f"{prefix[:16]}...); moved to {bad}. Rerun to download it again; if "
                            f"it keeps failing the server's file may have changed: rerun with "
                            f"--no-verify")
    return digest


def fetch(url: str, dest: str | Path, *, sha512_prefix: str | None = None, verify: bool = True,
          retries: int = 3, timeout: float = 60.0, progress: bool = False, wait: float = 2.0) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it, and return ``dest``.

    An existing ``dest`` with its ``.sha512`` record is kept; one without it (placed by hand)
    is verified first. Raises ``DownloadError`` with the URL and what to do.
    """
    dest = Path(dest)
    record = dest.with_name(dest.name + ".sha512")
    if dest.exists():
        if not record.exists():
            record.write_text(_verify(dest, sha512_prefix, url, verify) + "\n")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            total = _stream(url, part, timeout, progress)
            break
        except HTTPError as e:
            if e.code < 500 or attempt == retries:
                raise DownloadError(f"{url}: the server refused (HTTP {e.code} {e.reason}); "
                                    f"{_hint(url, dest)}") from None
        except (URLError, HTTPException, OSError) as e:
            if attempt == retries:
                reason = getattr(e, "reason", e)
                raise DownloadError(f"{url}: cannot download ({reason}; offline, DNS failure or "
                                    f"an unreliable server); partial data kept in {part}; "
                                    f"{_hint(url, dest)}") from None
        time.sleep(wait * (attempt + 1))
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: got {size} bytes but the server announced {total}; delete "
                            f"{part} and rerun")
    digest = _verify(part, sha512_prefix, url, verify)
    part.replace(dest)
    record.write_text(digest + "\n")
    return dest


def unpack(archive: Path, into: Path) -> None:
    """Unzip ``archive`` into ``into`` once (``<archive>.unpacked`` marks a finished unpack)."""
    marker = archive.with_name(archive.name + ".unpacked")
    if marker.exists():
        return
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
    except (zipfile.BadZipFile, OSError) as e:
        raise DownloadError(f"cannot unpack {archive} ({e}); delete it and rerun to download it "
                            f"again") from None
    marker.write_text("ok\n")


def download_dataset(name: str, root: str | Path, domains=None, *, mirror: str | None = None,
                     verify: bool = True, keep_archives: bool = True, progress: bool = True,
                     **fetch_options) -> list[Path]:
    """Fetch, verify and unpack ``name``'s files into ``root``; returns the files fetched.

    Only DomainNet has public direct URLs; for the others a ``ValueError`` carries the manual
    instructions. Every file is attempted; one ``DownloadError`` lists all failures at the end.
    """
    from w2sclip.data import get_spec

    spec = get_spec(name)
    if not spec.downloadable:
        raise ValueError(f"{name} cannot be downloaded automatically. {spec.manual_download} "
                         f"Then run `w2sclip data check {name} --root {root}`.")
    domains = list(domains or spec.domains)
    unknown = [d for d in domains if d not in spec.domains]
    if unknown:
        raise KeyError(f"unknown domain(s) {unknown} for {name}; valid: {', '.join(spec.domains)}")
    root = Path(root).expanduser()
    done, failures = [], []
    for r in domainnet_remotes(domains, mirror or DOMAINNET_URL):
        dest = root / r.dest
        if r.unpack and dest.with_name(dest.name + ".unpacked").exists():
            log.info("%s already unpacked", dest)
            continue
        try:
            done.append(fetch(r.url, dest, sha512_prefix=r.sha512_prefix, verify=verify,
                              progress=progress, **fetch_options))
            if r.unpack:
                unpack(dest, root)
                if not keep_archives:
                    dest.unlink()
        except DownloadError as e:
            failures.append(str(e))
    if failures:
        raise DownloadError(f"{len(failures)} of the {name} files failed:\n  - " + "\n  - ".join(failures))
    return done
