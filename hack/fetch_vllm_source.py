#!/usr/bin/env python3
"""Fetch the pinned vLLM release's source (its sdist) and extract the files gpupin checks against.

vLLM has no CPU build that installs here, so gpupin never imports it: tests/test_vllm_source.py
reads the release's own source with ``ast`` to check every flag, environment variable and probe
path that gpupin renders into vLLM pods. This script supplies that source.

What it does, in order, each step skipped when already done (a warm run takes well under a second):

1. Finds the sdist ``vllm-<version>.tar.gz`` on the package index pip is configured with (pip's
   own settings: PIP_INDEX_URL / pip.conf / its built-in default, plus extra-index-url and local
   find-links folders), through the PEP 691 JSON or PEP 503 HTML simple page. ``pip download``
   is not used: for an sdist it builds metadata, which needs torch.
2. Downloads it into a cache outside the work tree,
   ``${GPUPIN_ENGINES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpupin/engines}/vllm-<version>/``,
   with the same CA bundle and proxy pip would use, and checks its sha256 against the pin below
   (taken from the index's own listing of the file).
3. Extracts only the members listed in MEMBERS (the CLI, config, env, server-route, platform and
   Dockerfile sources, about 6 MB of the 153 MB tree) into ``.../vllm-<version>/source``.

Progress goes to stderr; stdout gets one line, the extracted root (the folder that holds
``vllm/`` and ``PKG-INFO``), for ``GPUPIN_VLLM_SOURCE="$(hack/fetch-vllm-source.sh)"``.
Exit status 1 with a one-line reason on any failure.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import html.parser
import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = "vllm"
VERSION = "0.33.0"
SDIST = f"{PROJECT}-{VERSION}.tar.gz"
SDIST_SHA256 = "f4c33c2503d52bb411146afa9618a4f48bed68912f617e6803ac8d76e4c74112"
"""sha256 of vllm-0.33.0.tar.gz as the index lists it (its PEP 691 ``hashes``)."""
SDIST_SIZE = 47_101_396

MEMBERS: tuple[str, ...] = (
    "PKG-INFO",
    "pyproject.toml",
    "docker/Dockerfile",
    "docker/entrypoints/*",
    "vllm/envs.py",
    "vllm/engine/arg_utils.py",
    "vllm/utils/argparse_utils.py",
    "vllm/config/*.py",
    "vllm/platforms/*.py",
    "vllm/entrypoints/*.py",  # cli_args, the serve subcommand, routers, middleware (all depths)
)
"""Paths inside the sdist's top folder to extract (fnmatch: ``*`` also crosses ``/``)."""

STAMP = ".gpupin-extracted"

ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"


class FetchError(Exception):
    """A failure with a message fit for the user."""


def log(message: str) -> None:
    print(f"fetch-vllm-source: {message}", file=sys.stderr, flush=True)


@dataclass
class PipSettings:
    """The subset of pip's effective configuration that fetching one file needs."""

    index_urls: list[str]
    find_links: list[str] = field(default_factory=list)
    cert: str | None = None
    proxy: str | None = None
    timeout: float = 60.0
    source: str = ""


def pip_settings() -> PipSettings:
    """pip's effective settings (env, config files, defaults), read the way pip reads them.

    First choice is pip's own option parser, which merges PIP_* variables and every pip.conf
    exactly as ``pip download`` would. Without a usable pip: PIP_INDEX_URL, then
    ``pip config list``, then pip's built-in default index.
    """
    try:
        from pip._internal.commands import create_command

        options, _ = create_command("download").parse_args([])
        urls = [options.index_url, *options.extra_index_urls] if not options.no_index else []
        return PipSettings(
            index_urls=[u for u in urls if u],
            find_links=list(options.find_links or []),
            cert=options.cert or None,
            proxy=options.proxy or None,
            timeout=float(options.timeout or 60),
            source="pip's effective configuration",
        )
    except Exception as exc:  # pip missing or its internals moved: fall back below
        log(f"could not read pip's configuration through pip itself ({exc!r}); falling back")
    config = _pip_config_list()
    index = os.environ.get("PIP_INDEX_URL") or config.get("index-url")
    extra = (os.environ.get("PIP_EXTRA_INDEX_URL") or config.get("extra-index-url") or "").split()
    if not index:
        try:
            from pip._internal.models.index import PyPI

            index = PyPI.simple_url
        except Exception as exc:
            raise FetchError(
                "no package index configured (PIP_INDEX_URL or pip.conf index-url) and pip's "
                f"default could not be read: {exc!r}"
            ) from exc
    cert = os.environ.get("PIP_CERT") or config.get("cert")
    links = (os.environ.get("PIP_FIND_LINKS") or config.get("find-links") or "").split()
    timeout = float(os.environ.get("PIP_DEFAULT_TIMEOUT") or config.get("timeout") or 60)
    return PipSettings(
        index_urls=[index, *extra],
        find_links=links,
        cert=cert,
        proxy=os.environ.get("PIP_PROXY") or config.get("proxy"),
        timeout=timeout,
        source="PIP_* variables / pip config list",
    )


def _pip_config_list() -> dict[str, str]:
    """``pip config list`` as {option: value}, the last writer winning as in pip."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.rsplit(".", 1)[-1].strip()] = value.strip().strip("'\"")
    return values


def ssl_context(settings: PipSettings) -> ssl.SSLContext:
    """Trust what pip trusts: its configured cert bundle, else the system store plus pip's certifi."""
    if settings.cert:
        if not Path(settings.cert).exists():
            raise FetchError(f"pip's configured CA bundle {settings.cert} does not exist")
        return ssl.create_default_context(cafile=settings.cert)
    context = ssl.create_default_context()
    try:
        from pip._vendor import certifi

        context.load_verify_locations(cafile=certifi.where())
    except Exception:  # the system store alone
        pass
    return context


class Http:
    """urllib with pip's trust, pip's proxy (or the *_proxy variables urllib reads) and timeout.

    Credentials embedded in an index URL (user:password@host) become Basic auth for that host only.
    """

    def __init__(self, settings: PipSettings) -> None:
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.HTTPSHandler(context=ssl_context(settings))
        ]
        if settings.proxy:
            handlers.append(urllib.request.ProxyHandler({"http": settings.proxy, "https": settings.proxy}))
        self.opener = urllib.request.build_opener(*handlers)  # ProxyHandler() from env by default
        self.timeout = settings.timeout
        self.auth: dict[str, str] = {}

    def strip_credentials(self, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.username is None:
            return url
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        host = parts.hostname or ""
        self.auth[host] = "Basic " + base64.b64encode(token.encode()).decode()
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def open(self, url: str, accept: str | None = None) -> Any:
        request = urllib.request.Request(url, headers={"User-Agent": "gpupin-fetch-vllm-source"})
        if accept:
            request.add_header("Accept", accept)
        host = urllib.parse.urlsplit(url).hostname or ""
        if host in self.auth:
            request.add_header("Authorization", self.auth[host])
        return self.opener.open(request, timeout=self.timeout)


class _Links(html.parser.HTMLParser):
    """The anchors of a PEP 503 page: (text, href)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append(("".join(self._text).strip(), self._href))
            self._href = None


def find_sdist(http: Http, index_url: str) -> tuple[str, str | None]:
    """(absolute URL, sha256 the index states or None) of SDIST on one simple index."""
    page = urllib.parse.urljoin(http.strip_credentials(index_url).rstrip("/") + "/", f"{PROJECT}/")
    log(f"looking up {SDIST} on {page}")
    try:
        with http.open(page, accept=ACCEPT) as response:
            final = response.geturl()
            ctype = response.headers.get_content_type()
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{page}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"{page}: {getattr(exc, 'reason', exc)}") from exc
    if ctype == "application/vnd.pypi.simple.v1+json":
        for item in json.loads(body).get("files", []):
            if item.get("filename") == SDIST:
                return urllib.parse.urljoin(final, item["url"]), item.get("hashes", {}).get("sha256")
    else:
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        for text, href in parser.links:
            target = urllib.parse.urljoin(final, href)
            name = urllib.parse.unquote(urllib.parse.urlsplit(target).path.rsplit("/", 1)[-1])
            if SDIST in (text, name):
                target, fragment = urllib.parse.urldefrag(target)
                algorithm, _, digest = fragment.partition("=")
                return target, digest if algorithm == "sha256" and digest else None
    raise FetchError(f"{page} lists no {SDIST}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(http: Http, url: str, target: Path) -> None:
    """Stream url to target (through a .part file), logging progress every ~10%."""
    part = target.with_name(target.name + ".part")
    started = time.monotonic()
    try:
        with http.open(url) as response, part.open("wb") as out:
            total = int(response.headers.get("Content-Length") or SDIST_SIZE)
            done, next_report = 0, 0.1
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                done += len(chunk)
                if done / total >= next_report:
                    log(f"  {done / 1e6:.1f} of {total / 1e6:.1f} MB")
                    next_report += 0.1
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise FetchError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise FetchError(f"download of {url} failed: {getattr(exc, 'reason', exc)}") from exc
    part.replace(target)
    log(f"downloaded {SDIST} in {time.monotonic() - started:.1f} s")


def from_find_links(settings: PipSettings, target: Path) -> bool:
    """Copy SDIST from a local find-links folder pip is configured with, if one holds it."""
    for link in settings.find_links:
        folder = Path(urllib.parse.urlsplit(link).path if link.startswith("file:") else link)
        candidate = folder / SDIST
        if candidate.is_file():
            log(f"found {candidate} (pip find-links)")
            shutil.copyfile(candidate, target)
            return True
    return False


def verified(path: Path) -> bool:
    actual = sha256_of(path)
    if actual != SDIST_SHA256:
        log(f"{path} has sha256 {actual}, expected {SDIST_SHA256}: discarding it")
        path.unlink()
        return False
    return True


def obtain_sdist(cache: Path) -> Path:
    """The verified sdist in the cache, fetched when absent or damaged."""
    target = cache / SDIST
    if target.exists() and verified(target):
        return target
    settings = pip_settings()
    if from_find_links(settings, target) and verified(target):
        return target
    if not settings.index_urls:
        raise FetchError(
            "pip is configured with no index (--no-index) and no find-links folder holds " + SDIST
        )
    http = Http(settings)
    log(f"package index from {settings.source}; CA bundle {settings.cert or 'system + certifi'}")
    errors = []
    for index in settings.index_urls:
        try:
            url, listed = find_sdist(http, index)
        except FetchError as exc:
            errors.append(str(exc))
            continue
        if listed and listed != SDIST_SHA256:
            raise FetchError(
                f"the index lists {SDIST} with sha256 {listed}, not the pinned {SDIST_SHA256}: "
                "refusing it (re-pin only after checking why it changed)"
            )
        download(http, url, target)
        if verified(target):
            return target
        raise FetchError(f"{url} does not match the pinned sha256 {SDIST_SHA256}")
    raise FetchError("; ".join(errors))


def wanted(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in MEMBERS)


def stamp_text() -> str:
    return json.dumps({"sha256": SDIST_SHA256, "members": MEMBERS}, sort_keys=True)


def extract(sdist: Path, root: Path) -> None:
    """Extract the wanted members into root (via a temporary sibling, renamed when complete)."""
    started = time.monotonic()
    top = f"{PROJECT}-{VERSION}/"
    work = Path(tempfile.mkdtemp(prefix=".source-", dir=root.parent))
    work.chmod(0o755)  # mkdtemp makes it private; the tree is plain public source
    try:
        count = 0
        with tarfile.open(sdist, "r:gz") as archive:
            for member in archive:
                if not member.isfile() or not member.name.startswith(top):
                    continue
                name = member.name[len(top) :]
                if ".." in Path(name).parts or not wanted(name):
                    continue
                source = archive.extractfile(member)
                if source is None:
                    continue
                destination = work / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                with source, destination.open("wb") as out:
                    shutil.copyfileobj(source, out)
                count += 1
        if not (work / "vllm" / "engine" / "arg_utils.py").is_file():
            raise FetchError(f"{sdist} holds no {top}vllm/engine/arg_utils.py: not a vLLM sdist?")
        (work / STAMP).write_text(stamp_text())
        if root.exists():
            shutil.rmtree(root)
        work.rename(root)
        log(f"extracted {count} files into {root} in {time.monotonic() - started:.1f} s")
    finally:
        if work.exists():
            shutil.rmtree(work)


def cache_dir() -> Path:
    base = os.environ.get("GPUPIN_ENGINES_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "gpupin" / "engines")
    return Path(base) / f"{PROJECT}-{VERSION}"


def main() -> int:
    cache = cache_dir()
    root = cache / "source"
    try:
        stamp = root / STAMP
        if not (stamp.is_file() and stamp.read_text() == stamp_text()):
            cache.mkdir(parents=True, exist_ok=True)
            extract(obtain_sdist(cache), root)
    except (FetchError, OSError, tarfile.TarError) as exc:
        log(f"error: {exc}")
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
